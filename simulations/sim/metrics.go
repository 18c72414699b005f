package sim

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Delivery is one message reaching one recipient: its core kept the op.
type Delivery struct {
	Device int           `json:"device"`
	At     time.Duration `json:"at_ns"`
	Hops   int           `json:"hops"`
}

// MessageResult is what became of one message of the workload.
type MessageResult struct {
	Index      int           `json:"index"`
	Team       int           `json:"team"`
	From       int           `json:"from"`
	To         int           `json:"to"` // -1: the team
	Recipients []int         `json:"recipients"`
	Created    time.Duration `json:"created_ns"`
	Size       int           `json:"envelope_bytes"`
	Priority   crdt.Priority `json:"priority"`
	TTL        time.Duration `json:"ttl_ns"`
	Deliveries []Delivery    `json:"deliveries"`
	// Dropped counts carried copies dropped (buffer full, TTL passed).
	Dropped int `json:"dropped"`
	// Failed is why the author's core refused to send it, if it did.
	Failed string `json:"failed,omitempty"`
}

func (m *MessageResult) isRecipient(d int) bool { return slices.Contains(m.Recipients, d) }

func (m *MessageResult) deliveredTo(d int) bool {
	for _, x := range m.Deliveries {
		if x.Device == d {
			return true
		}
	}
	return false
}

// DeviceStats is one device's traffic and buffer.
type DeviceStats struct {
	Name          string `json:"name"`
	Relay         bool   `json:"relay"`
	BytesSent     int64  `json:"bytes_sent"`
	BytesReceived int64  `json:"bytes_received"`
	Frames        int64  `json:"frames_sent"`
	// Relayed counts the messages it received (each copy once).
	Relayed int `json:"messages_received"`
	// BufferMax and BufferMean are the bytes of other teams' envelopes it
	// carried, sampled at each tick.
	BufferMax  int     `json:"buffer_max"`
	BufferMean float64 `json:"buffer_mean"`
	bufferSum  float64
	bufferN    int
}

// Result is one run.
type Result struct {
	Strategy       string          `json:"strategy"`
	Seed           uint64          `json:"seed"`
	Duration       time.Duration   `json:"duration_ns"`
	Events         int64           `json:"events"`
	Contacts       int             `json:"contacts"`
	Sessions       int             `json:"sessions"`
	SessionsFailed int             `json:"sessions_failed"`
	FramesLost     int             `json:"frames_lost"`
	Bytes          int64           `json:"bytes"`
	Relayed        int             `json:"relayed"`
	Dropped        int             `json:"dropped"`
	Refused        int             `json:"refused"`
	Bans           int             `json:"bans"`
	Messages       []MessageResult `json:"messages"`
	Devices        []DeviceStats   `json:"devices"`
	Summary        Summary         `json:"summary"`
}

// Summary is the per-run figures researchers compare.
type Summary struct {
	Created    int `json:"created"`
	Recipients int `json:"recipients"` // (message, recipient) pairs
	Delivered  int `json:"delivered"`  // of those, delivered
	// DeliveryRatio is Delivered / Recipients.
	DeliveryRatio float64 `json:"delivery_ratio"`
	// MessagesDelivered counts messages delivered to every recipient.
	MessagesDelivered int           `json:"messages_delivered"`
	LatencyMean       time.Duration `json:"latency_mean_ns"`
	LatencyMedian     time.Duration `json:"latency_median_ns"`
	LatencyP95        time.Duration `json:"latency_p95_ns"`
	HopsMean          float64       `json:"hops_mean"`
	// Overhead is the ONE's overhead ratio: (relayed − delivered) / delivered.
	Overhead       float64 `json:"overhead_ratio"`
	BytesPerDevice float64 `json:"bytes_per_device"`
	BufferMeanMax  int     `json:"buffer_max"`
}

func (e *engine) finish() *Result {
	r := e.res
	for _, m := range e.msgs {
		r.Messages = append(r.Messages, *m)
	}
	for i, n := range e.nodes {
		s := n.stats
		if s.bufferN > 0 {
			s.BufferMean = s.bufferSum / float64(s.bufferN)
		}
		r.Devices[i] = s
	}
	r.Summary = Summarize(r)
	return r
}

// Latencies returns every delivery's latency, sorted.
func (r *Result) Latencies() []time.Duration {
	var ls []time.Duration
	for _, m := range r.Messages {
		for _, d := range m.Deliveries {
			ls = append(ls, d.At-m.Created)
		}
	}
	slices.Sort(ls)
	return ls
}

func quantile(ls []time.Duration, q float64) time.Duration {
	if len(ls) == 0 {
		return 0
	}
	i := int(q*float64(len(ls)-1) + 0.5)
	return ls[i]
}

// Summarize computes a run's figures.
func Summarize(r *Result) Summary {
	var s Summary
	hops := 0
	for _, m := range r.Messages {
		if m.Failed != "" {
			continue
		}
		s.Created++
		s.Recipients += len(m.Recipients)
		s.Delivered += len(m.Deliveries)
		if len(m.Deliveries) == len(m.Recipients) {
			s.MessagesDelivered++
		}
		for _, d := range m.Deliveries {
			hops += d.Hops
		}
	}
	if s.Recipients > 0 {
		s.DeliveryRatio = float64(s.Delivered) / float64(s.Recipients)
	}
	ls := r.Latencies()
	if len(ls) > 0 {
		var sum time.Duration
		for _, l := range ls {
			sum += l
		}
		s.LatencyMean = sum / time.Duration(len(ls))
		s.LatencyMedian = quantile(ls, 0.5)
		s.LatencyP95 = quantile(ls, 0.95)
		s.HopsMean = float64(hops) / float64(len(ls))
	}
	if s.Delivered > 0 {
		s.Overhead = float64(r.Relayed-s.Delivered) / float64(s.Delivered)
	}
	if len(r.Devices) > 0 {
		s.BytesPerDevice = float64(r.Bytes) / float64(len(r.Devices))
	}
	for _, d := range r.Devices {
		s.BufferMeanMax = max(s.BufferMeanMax, d.BufferMax)
	}
	return s
}

// WriteJSON writes the whole result.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(r)
}

// WriteMessagesCSV writes one row per (message, recipient).
func (r *Result) WriteMessagesCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"message", "team", "from", "to", "priority", "created_s", "bytes", "recipient", "delivered", "delivered_s", "latency_s", "hops", "dropped", "failed"})
	for _, m := range r.Messages {
		for _, rc := range m.Recipients {
			row := []string{strconv.Itoa(m.Index), strconv.Itoa(m.Team), strconv.Itoa(m.From), strconv.Itoa(m.To),
				m.Priority.String(), secs(m.Created), strconv.Itoa(m.Size), strconv.Itoa(rc)}
			var d *Delivery
			for i := range m.Deliveries {
				if m.Deliveries[i].Device == rc {
					d = &m.Deliveries[i]
				}
			}
			if d != nil {
				row = append(row, "true", secs(d.At), secs(d.At-m.Created), strconv.Itoa(d.Hops))
			} else {
				row = append(row, "false", "", "", "")
			}
			row = append(row, strconv.Itoa(m.Dropped), m.Failed)
			cw.Write(row)
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteDevicesCSV writes one row per device.
func (r *Result) WriteDevicesCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"device", "name", "relay", "bytes_sent", "bytes_received", "frames_sent", "messages_received", "buffer_max", "buffer_mean"})
	for i, d := range r.Devices {
		cw.Write([]string{strconv.Itoa(i), d.Name, strconv.FormatBool(d.Relay), strconv.FormatInt(d.BytesSent, 10),
			strconv.FormatInt(d.BytesReceived, 10), strconv.FormatInt(d.Frames, 10), strconv.Itoa(d.Relayed),
			strconv.Itoa(d.BufferMax), strconv.FormatFloat(d.BufferMean, 'f', 1, 64)})
	}
	cw.Flush()
	return cw.Error()
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

// WriteMessageStats writes the ONE's MessageStatsReport layout.
func (r *Result) WriteMessageStats(w io.Writer) error {
	s := r.Summary
	var b bytes.Buffer
	fmt.Fprintf(&b, "Message stats for scenario %s (fieldmesh sim, seed %d)\nsim_time: %.4f\n", r.Strategy, r.Seed, r.Duration.Seconds())
	fmt.Fprintf(&b, "created: %d\nstarted: %d\nrelayed: %d\naborted: %d\ndropped: %d\nremoved: 0\ndelivered: %d\n",
		s.Created, r.Relayed, r.Relayed, r.FramesLost, r.Dropped, s.Delivered)
	fmt.Fprintf(&b, "delivery_prob: %.4f\nresponse_prob: 0.0000\noverhead_ratio: %.4f\n", s.DeliveryRatio, s.Overhead)
	fmt.Fprintf(&b, "latency_avg: %.4f\nlatency_med: %.4f\nhopcount_avg: %.4f\nhopcount_med: %d\n",
		s.LatencyMean.Seconds(), s.LatencyMedian.Seconds(), s.HopsMean, r.hopsMedian())
	fmt.Fprintf(&b, "buffertime_avg: NaN\nbuffertime_med: NaN\nrtt_avg: NaN\nrtt_med: NaN\n")
	_, err := w.Write(b.Bytes())
	return err
}

func (r *Result) hopsMedian() int {
	var hs []int
	for _, m := range r.Messages {
		for _, d := range m.Deliveries {
			hs = append(hs, d.Hops)
		}
	}
	if len(hs) == 0 {
		return 0
	}
	slices.Sort(hs)
	return hs[len(hs)/2]
}
