package gossipbench

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Send is one message of a workload: published by node Source at offset At from the start of the
// measurement.
type Send struct {
	At     time.Duration
	Source int
}

// WorkloadConfig describes a paced workload with bursts. Every field must be set except Burst*, which
// may be zero for no bursts.
type WorkloadConfig struct {
	Messages int           // number of messages in all
	MeanGap  time.Duration // mean gap between events (exponentially distributed: a Poisson process)
	// BurstEvery is how many events apart bursts come on average (0: never). A burst is BurstSize
	// messages published by one node at one instant, as when a phone comes back into coverage and
	// flushes its outbox.
	BurstEvery int
	BurstSize  int
}

// RandomWorkload draws a workload for a network of n nodes: sources uniform among the nodes, gaps
// exponential. The same rng state gives the same workload.
func RandomWorkload(rng *rand.Rand, n int, c WorkloadConfig) ([]Send, error) {
	if n < 2 || c.Messages < 1 || c.MeanGap <= 0 || c.BurstEvery < 0 || (c.BurstEvery > 0 && c.BurstSize < 2) {
		return nil, fmt.Errorf("gossipbench: bad workload config %+v", c)
	}
	var out []Send
	at := time.Duration(0)
	for len(out) < c.Messages {
		at += time.Duration(rng.ExpFloat64() * float64(c.MeanGap)).Round(time.Millisecond)
		src := rng.IntN(n)
		k := 1
		if c.BurstEvery > 0 && rng.IntN(c.BurstEvery) == 0 {
			k = c.BurstSize
		}
		for i := 0; i < k && len(out) < c.Messages; i++ {
			out = append(out, Send{At: at, Source: src})
		}
	}
	return out, nil
}
