package node

import stdsync "sync"

// coalescer runs at most one job per key at a time, on goroutines that start gives it, and coalesces
// requests: a request for a key whose job is running makes it run once more when it ends, however
// many requests came meanwhile. The job that runs again sees everything the requests asked for,
// because a job always works from the current state (the node's attachment fetches and pushes). Its
// zero value is ready to use.
//
// Sync sessions (syncsvc.go) do not use it: their callers may have to wait for their own session to
// run (SyncNow), which a job on another goroutine cannot give them.
type coalescer struct {
	mu      stdsync.Mutex
	running map[string]bool // a job of this key runs
	again   map[string]bool // run it once more when it ends
}

// soon runs job on a goroutine started by start unless a job of key runs; then it marks that job to
// run once more. start may drop the job (the node is closing): the key is then free again.
func (c *coalescer) soon(key string, start func(func()) bool, job func()) {
	c.mu.Lock()
	if c.running == nil {
		c.running, c.again = make(map[string]bool), make(map[string]bool)
	}
	if c.running[key] {
		c.again[key] = true
		c.mu.Unlock()
		return
	}
	c.running[key] = true
	c.mu.Unlock()
	started := start(func() {
		for {
			job()
			c.mu.Lock()
			if !c.again[key] {
				delete(c.running, key)
				c.mu.Unlock()
				return
			}
			delete(c.again, key)
			c.mu.Unlock()
		}
	})
	if !started {
		c.mu.Lock()
		delete(c.running, key)
		delete(c.again, key)
		c.mu.Unlock()
	}
}
