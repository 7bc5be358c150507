package promproc

import (
	"io"
	"sync"
)

// lenientWriter ignores its writer's errors, so that a failing log cannot stall Prometheus
// on a full output pipe.
type lenientWriter struct{ w io.Writer }

func (l *lenientWriter) Write(b []byte) (int, error) {
	l.w.Write(b)
	return len(b), nil
}

// tailBuffer keeps the last max bytes written to it, for error messages.
type tailBuffer struct {
	max int
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// multiWriter writes to every writer, none of which fails. Unlike io.MultiWriter it is a
// comparable value, so exec.Cmd given it as both Stdout and Stderr writes from one goroutine.
type multiWriter [2]io.Writer

func (m multiWriter) Write(b []byte) (int, error) {
	for _, w := range m {
		w.Write(b)
	}
	return len(b), nil
}
