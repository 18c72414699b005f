package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// MaxWait is the longest wait after wrong passphrases.
const MaxWait = time.Hour

const backoffName = "unlock-wait"

// WaitError is returned for an unlock tried before the wait after the last wrong passphrase ended.
type WaitError struct{ Wait time.Duration }

func (e *WaitError) Error() string {
	return fmt.Sprintf("too many wrong passphrases: try again in %s", max(time.Second, e.Wait.Round(time.Second)))
}

// backoff is the state of DIR/unlock-wait: how many wrong passphrases in a row, and when the last one
// was. It holds no secret. A thief who deletes it resets the wait of the daemon's unlock, but gains
// nothing against the keyring itself, which costs an Argon2id derivation per guess wherever it is tried.
type backoff struct {
	Failures int   `json:"failures"`
	Last     int64 `json:"last"` // Unix seconds
}

// waitAfter is the wait after n wrong passphrases in a row: none after the first (a typo is retyped at
// once), then 1 s, 2 s, 4 s, … up to MaxWait.
func waitAfter(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	if n > 14 {
		return MaxWait
	}
	return min(time.Second<<(n-2), MaxWait)
}

func (b backoff) until() time.Time {
	if b.Failures == 0 {
		return time.Time{}
	}
	return time.Unix(b.Last, 0).Add(waitAfter(b.Failures))
}

func (b *backoff) fail(now time.Time) {
	b.Failures++
	b.Last = now.Unix()
}

func readBackoff(dir string) backoff {
	var b backoff
	raw, err := os.ReadFile(filepath.Join(dir, backoffName))
	if err != nil || json.Unmarshal(raw, &b) != nil || b.Failures < 0 {
		return backoff{}
	}
	return b
}

// write stores b durably: temporary file, fsync, rename.
func (b backoff) write(dir string) error {
	raw, _ := json.Marshal(b)
	tmp := filepath.Join(dir, "."+backoffName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("session: record the wrong passphrase: %w", err)
	}
	_, werr := f.Write(raw)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("session: record the wrong passphrase: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, backoffName)); err != nil {
		return fmt.Errorf("session: record the wrong passphrase: %w", err)
	}
	return nil
}

func removeBackoff(dir string) error {
	if err := os.Remove(filepath.Join(dir, backoffName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("session: reset the passphrase wait: %w", err)
	}
	return nil
}
