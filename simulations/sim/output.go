package sim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// WriteOutputs writes a run's files into dir: result.json, messages.csv,
// devices.csv, MessageStatsReport.txt, and, if plots is set, the plots
// (SVG and PNG).
func WriteOutputs(dir string, r *Result, plots bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := []struct {
		name  string
		write func(*bytes.Buffer) error
	}{
		{"result.json", func(b *bytes.Buffer) error { return r.WriteJSON(b) }},
		{"messages.csv", func(b *bytes.Buffer) error { return r.WriteMessagesCSV(b) }},
		{"devices.csv", func(b *bytes.Buffer) error { return r.WriteDevicesCSV(b) }},
		{"MessageStatsReport.txt", func(b *bytes.Buffer) error { return r.WriteMessageStats(b) }},
	}
	for _, f := range files {
		var b bytes.Buffer
		if err := f.write(&b); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if plots {
		return WritePlots(dir, []*Result{r})
	}
	return nil
}
