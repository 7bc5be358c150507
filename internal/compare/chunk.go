package compare

import (
	"encoding/binary"
	"math"
)

// chunk holds one series' samples, oldest first, in about 3 bytes a sample rather than
// Sample's 16: a feed keeps every live rollout's samples over its step (30 series a rollout
// for the shipped template: at 10,000 rollouts, a third of the daemon's heap as []Sample).
//
// Each sample is stored as the change from the one before it (the first from a zero
// sample): its interval's change from the interval before, zigzag-varint (scrapes come at a
// steady pace: mostly one byte), and its value's change as a zigzag varint when the change
// is a whole number that gives the value back exactly (counters of requests and histogram
// buckets: one to three bytes), the value's 8 bytes otherwise. Decoding gives back exactly
// the samples appended, bit for bit.
type chunk struct {
	b    []byte
	n    int
	base cursor // where decoding begins: before the first sample held
	last cursor // after the last sample held
}

// cursor is the state of decoding between two samples: the sample before, and the interval
// that led to it.
type cursor struct {
	t, dt int64
	v     float64
}

// Whole numbers up to 2^53 are exact in a float64.
const maxExactDelta = 1 << 53

func (c *chunk) len() int { return c.n }

// lastSample is the newest sample held; the chunk must not be empty.
func (c *chunk) lastSample() Sample { return Sample{T: c.last.t, V: c.last.v} }

// append adds samples newer than those held (each newer than the one before).
func (c *chunk) append(samples ...Sample) {
	for _, s := range samples {
		dt := s.T - c.last.t
		c.b = binary.AppendVarint(c.b, dt-c.last.dt)
		d := s.V - c.last.v
		if d == math.Trunc(d) && math.Abs(d) <= maxExactDelta &&
			math.Float64bits(c.last.v+float64(int64(d))) == math.Float64bits(s.V) {
			c.b = binary.AppendUvarint(c.b, zigzag(int64(d))<<1)
		} else {
			c.b = append(c.b, 1)
			c.b = binary.LittleEndian.AppendUint64(c.b, math.Float64bits(s.V))
		}
		c.last = cursor{t: s.T, dt: dt, v: s.V}
		c.n++
	}
}

// next decodes the sample at b[off:] after cur, returning it and the offset after it.
func (c *chunk) next(cur cursor, off int) (cursor, int) {
	dod, k := binary.Varint(c.b[off:])
	off += k
	cur.dt += dod
	cur.t += cur.dt
	u, k := binary.Uvarint(c.b[off:])
	off += k
	if u&1 == 0 {
		cur.v += float64(unzigzag(u >> 1))
	} else {
		cur.v = math.Float64frombits(binary.LittleEndian.Uint64(c.b[off:]))
		off += 8
	}
	return cur, off
}

// appendTo appends the samples held to dst.
func (c *chunk) appendTo(dst []Sample) []Sample {
	cur, off := c.base, 0
	for range c.n {
		cur, off = c.next(cur, off)
		dst = append(dst, Sample{T: cur.t, V: cur.v})
	}
	return dst
}

// through counts the samples at or before ms.
func (c *chunk) through(ms int64) int {
	cur, off := c.base, 0
	for i := range c.n {
		if cur, off = c.next(cur, off); cur.t > ms {
			return i
		}
	}
	return c.n
}

// drop removes the oldest i samples (at most len), into a buffer of its own so that the
// memory they held is freed.
func (c *chunk) drop(i int) {
	cur, off := c.base, 0
	for range min(i, c.n) {
		cur, off = c.next(cur, off)
	}
	c.b = append([]byte(nil), c.b[off:]...)
	c.base = cur
	c.n -= min(i, c.n)
}

func zigzag(x int64) uint64   { return uint64(x<<1) ^ uint64(x>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }
