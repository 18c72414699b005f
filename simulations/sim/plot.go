package sim

import (
	"fmt"
	"image/color"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlots writes, for one run or several strategies on the same
// contacts, latency-cdf, delivery and bytes-per-device as SVG and PNG.
func WritePlots(dir string, rs []*Result) error {
	plots := []struct {
		name string
		make func([]*Result) (*plot.Plot, error)
	}{
		{"latency-cdf", latencyCDF},
		{"delivery", deliveryOverTime},
		{"bytes-per-device", bytesPerDevice},
	}
	for _, p := range plots {
		pl, err := p.make(rs)
		if err != nil {
			return fmt.Errorf("plot %s: %w", p.name, err)
		}
		for _, ext := range []string{".svg", ".png"} {
			if err := pl.Save(16*vg.Centimeter, 10*vg.Centimeter, filepath.Join(dir, p.name+ext)); err != nil {
				return fmt.Errorf("plot %s: %w", p.name, err)
			}
		}
	}
	return nil
}

func lineColor(i int) color.Color { return plotutil.Color(i) }

func addLine(p *plot.Plot, i int, name string, xys plotter.XYs) error {
	if len(xys) == 0 {
		xys = plotter.XYs{{X: 0, Y: 0}}
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = lineColor(i)
	l.Dashes = plotutil.Dashes(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// latencyCDF: the share of (message, recipient) pairs delivered within x
// hours; it ends at the delivery ratio.
func latencyCDF(rs []*Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Latency CDF"
	p.X.Label.Text = "latency (hours)"
	p.Y.Label.Text = "share of recipients reached"
	p.Legend.Top = false
	p.Legend.Left = false
	for i, r := range rs {
		ls := r.Latencies()
		n := float64(max(1, r.Summary.Recipients))
		xys := make(plotter.XYs, 0, len(ls)+1)
		xys = append(xys, plotter.XY{})
		for k, l := range ls {
			xys = append(xys, plotter.XY{X: l.Hours(), Y: float64(k+1) / n})
		}
		if err := addLine(p, i, r.Strategy, xys); err != nil {
			return nil, err
		}
	}
	p.Y.Min, p.Y.Max = 0, 1
	return p, nil
}

// deliveryOverTime: deliveries so far over recipients of messages created
// so far, against simulated time.
func deliveryOverTime(rs []*Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Delivery over time"
	p.X.Label.Text = "simulated time (days)"
	p.Y.Label.Text = "delivered / recipients so far"
	p.Legend.Top = false
	p.Legend.Left = false
	for i, r := range rs {
		type ev struct {
			at    float64
			recip int
			deliv int
		}
		var evs []ev
		for _, m := range r.Messages {
			if m.Failed != "" {
				continue
			}
			evs = append(evs, ev{at: m.Created.Hours() / 24, recip: len(m.Recipients)})
			for _, d := range m.Deliveries {
				evs = append(evs, ev{at: d.At.Hours() / 24, deliv: 1})
			}
		}
		slices.SortStableFunc(evs, func(a, b ev) int {
			switch {
			case a.at < b.at:
				return -1
			case a.at > b.at:
				return 1
			}
			return 0
		})
		var xys plotter.XYs
		rec, del := 0, 0
		for _, e := range evs {
			rec += e.recip
			del += e.deliv
			if rec > 0 {
				xys = append(xys, plotter.XY{X: e.at, Y: float64(del) / float64(rec)})
			}
		}
		xys = thin(xys, 2000)
		if err := addLine(p, i, r.Strategy, xys); err != nil {
			return nil, err
		}
	}
	p.Y.Min, p.Y.Max = 0, 1
	return p, nil
}

// bytesPerDevice: bytes each device sent, devices sorted by it.
func bytesPerDevice(rs []*Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Bytes sent per device"
	p.X.Label.Text = "devices, sorted by bytes sent"
	p.Y.Label.Text = "KiB sent"
	p.Legend.Top = true
	p.Legend.Left = true
	for i, r := range rs {
		bs := make([]float64, len(r.Devices))
		for k, d := range r.Devices {
			bs[k] = float64(d.BytesSent) / 1024
		}
		slices.Sort(bs)
		xys := make(plotter.XYs, len(bs))
		for k, b := range bs {
			xys[k] = plotter.XY{X: float64(k), Y: b}
		}
		if err := addLine(p, i, r.Strategy, thin(xys, 2000)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// thin keeps at most n points, evenly, and the last.
func thin(xys plotter.XYs, n int) plotter.XYs {
	if len(xys) <= n {
		return xys
	}
	out := make(plotter.XYs, 0, n+1)
	step := float64(len(xys)) / float64(n)
	for k := 0.0; int(k) < len(xys); k += step {
		out = append(out, xys[int(k)])
	}
	return append(out, xys[len(xys)-1])
}
