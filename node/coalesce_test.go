package node

import (
	stdsync "sync"
	"sync/atomic"
	"testing"
)

func TestCoalescer(t *testing.T) {
	var (
		c       coalescer
		wg      stdsync.WaitGroup
		runs    atomic.Int32
		entered = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	start := func(f func()) bool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
		return true
	}
	job := func() {
		runs.Add(1)
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}
	c.soon("a", start, job)
	<-entered
	for range 5 {
		c.soon("a", start, job) // coalesced into one more run
	}
	close(release)
	wg.Wait()
	if got := runs.Load(); got != 2 {
		t.Fatalf("runs = %d after one request and 5 while it ran; want 2", got)
	}
	c.soon("a", start, job)
	c.soon("b", start, job)
	wg.Wait()
	if got := runs.Load(); got != 4 {
		t.Fatalf("runs = %d after two more requests of two keys; want 4", got)
	}

	// A start that refuses (the node closed) leaves the key free.
	c.soon("c", func(func()) bool { return false }, job)
	c.soon("c", start, job)
	wg.Wait()
	if got := runs.Load(); got != 5 {
		t.Fatalf("runs = %d after a refused start and a request; want 5", got)
	}
}
