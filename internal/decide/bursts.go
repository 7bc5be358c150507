package decide

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Errors often come in bursts on one pod, on the stable side's pods as on the canary's (see
// compare's bursts). When compare found bursts in the canary's counts, the rollback tests
// and the guards judge the canary both on all its counts and on its steady counts (without
// the bursts), and conclude only what both show: a regression of the canary's code is in its
// steady counts too; a burst on one pod is not. This can only make rollbacks rarer: each
// test's e-value is at most what it is on all the counts, so the tests stay valid, and a
// pass is still judged on all the counts.

// steadyOf is the canary's counts without its bursts, and what they left out, or nil when
// compare found none.
func steadyOf(c *rollout.Counts) (*rollout.Counts, string) {
	if c == nil || c.Steady == nil || len(c.Bursts) == 0 {
		return nil, ""
	}
	parts := make([]string, 0, len(c.Bursts))
	for i, b := range c.Bursts {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d more", len(c.Bursts)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s to %s (%d of %d, where %s were expected)", b.Target,
			b.From.UTC().Format(time.TimeOnly), b.Through.UTC().Format(time.TimeOnly),
			int64(math.Round(b.Events)), int64(math.Round(b.Total)), formatValue(rollout.KindRatio, b.Rate)))
	}
	return c.Steady, "judged without the canary's bursts on single targets too: " + strings.Join(parts, ", ")
}
