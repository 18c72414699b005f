package sim

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chart is one of WritePlots' plots: one line per result, from series.
type chart struct {
	name, title, x, y string
	// legendTopLeft puts the legend top left (else bottom right); share
	// makes the Y axis run from 0 to 1.
	legendTopLeft, share bool
	series               func(*Result) plotter.XYs
}

// charts are the plots WritePlots writes.
var charts = []chart{
	{name: "latency-cdf", title: "Latency CDF", x: "latency (hours)", y: "share of recipients reached", share: true, series: latencyCDF},
	{name: "delivery", title: "Delivery over time", x: "simulated time (days)", y: "delivered / recipients so far", share: true, series: deliveryOverTime},
	{name: "bytes-per-device", title: "Bytes sent per device", x: "devices, sorted by bytes sent", y: "KiB sent", legendTopLeft: true, series: bytesPerDevice},
}

// WritePlots writes, for one run or several strategies on the same
// contacts, latency-cdf, delivery and bytes-per-device as SVG and PNG.
func WritePlots(dir string, rs []*Result) error {
	for _, c := range charts {
		pl, err := c.plot(rs)
		if err != nil {
			return fmt.Errorf("plot %s: %w", c.name, err)
		}
		for _, ext := range []string{".svg", ".png"} {
			if err := pl.Save(16*vg.Centimeter, 10*vg.Centimeter, filepath.Join(dir, c.name+ext)); err != nil {
				return fmt.Errorf("plot %s: %w", c.name, err)
			}
		}
	}
	return nil
}

// plot draws c for rs: a line per result, named by its strategy.
func (c chart) plot(rs []*Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = c.x
	p.Y.Label.Text = c.y
	p.Legend.Top, p.Legend.Left = c.legendTopLeft, c.legendTopLeft
	for i, r := range rs {
		xys := c.series(r)
		if len(xys) == 0 {
			xys = plotter.XYs{{X: 0, Y: 0}}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(r.Strategy, l)
	}
	if c.share {
		p.Y.Min, p.Y.Max = 0, 1
	}
	return p, nil
}

// latencyCDF: the share of (message, recipient) pairs delivered within x
// hours; it ends at the delivery ratio.
func latencyCDF(r *Result) plotter.XYs {
	ls := r.Latencies()
	n := float64(max(1, r.Summary.Recipients))
	xys := make(plotter.XYs, 0, len(ls)+1)
	xys = append(xys, plotter.XY{})
	for k, l := range ls {
		xys = append(xys, plotter.XY{X: l.Hours(), Y: float64(k+1) / n})
	}
	return xys
}

// deliveryOverTime: deliveries so far over recipients of messages created
// so far, against simulated time.
func deliveryOverTime(r *Result) plotter.XYs {
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
	slices.SortStableFunc(evs, func(a, b ev) int { return cmp.Compare(a.at, b.at) })
	var xys plotter.XYs
	rec, del := 0, 0
	for _, e := range evs {
		rec += e.recip
		del += e.deliv
		if rec > 0 {
			xys = append(xys, plotter.XY{X: e.at, Y: float64(del) / float64(rec)})
		}
	}
	return thin(xys, 2000)
}

// bytesPerDevice: bytes each device sent, devices sorted by it.
func bytesPerDevice(r *Result) plotter.XYs {
	bs := make([]float64, len(r.Devices))
	for k, d := range r.Devices {
		bs[k] = float64(d.BytesSent) / 1024
	}
	slices.Sort(bs)
	xys := make(plotter.XYs, len(bs))
	for k, b := range bs {
		xys[k] = plotter.XY{X: float64(k), Y: b}
	}
	return thin(xys, 2000)
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
