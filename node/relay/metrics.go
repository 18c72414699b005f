package relay

import (
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the relay's own Prometheus metrics. Topics appear only by their short tag (8 hex
// characters, as `relay status` lists them), in the per-topic usage gauges (topicUsage).
type metrics struct {
	stored     *prometheus.CounterVec // via: sync, gossip
	dropped    *prometheus.CounterVec // reason: topic_quota, quota, retention
	refused    *prometheus.CounterVec // reason: malformed, wrong_topic, not_enrolled, future, rate
	enrolments *prometheus.CounterVec // result: enrolled, not_carried, bad_proof, not_member, bad_roster
	rosters    prometheus.Counter     // rosters taken
	sessions   *prometheus.CounterVec // role: initiator, responder; result: ok, error, refused
	syncBytes  *prometheus.CounterVec // direction: sent, received
}

func newMetrics(reg prometheus.Registerer, r *Relay) *metrics {
	m := &metrics{
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldmesh_relay_envelopes_stored_total",
			Help: "Envelopes stored, by how they arrived (sync or gossip).",
		}, []string{"via"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldmesh_relay_envelopes_dropped_total",
			Help: "Stored envelopes dropped, by reason (quota or retention).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldmesh_relay_envelopes_refused_total",
			Help: "Envelopes refused on arrival, by reason.",
		}, []string{"reason"}),
		enrolments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldmesh_relay_enrolments_total",
			Help: "Topic enrolment attempts by devices, by result.",
		}, []string{"result"}),
		rosters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldmesh_relay_rosters_taken_total",
			Help: "Newer topic rosters taken from admin devices.",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldmesh_relay_sync_sessions_total",
			Help: "Reconciliation sessions, by role and result.",
		}, []string{"role", "result"}),
		syncBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldmesh_relay_sync_bytes_total",
			Help: "Reconciliation frame bytes, by direction.",
		}, []string{"direction"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		m.stored, m.dropped, m.refused, m.enrolments, m.rosters, m.sessions, m.syncBytes,
		gauge("fieldmesh_relay_envelopes", "Envelopes stored now.", func() float64 {
			n, _, _ := r.st.totals()
			return float64(n)
		}),
		gauge("fieldmesh_relay_stored_bytes", "Bytes the quota counts now (envelopes plus their index entries).", func() float64 {
			_, b, _ := r.st.totals()
			return float64(b)
		}),
		gauge("fieldmesh_relay_quota_bytes", "The quota.", func() float64 { return float64(r.cfg.Quota) }),
		gauge("fieldmesh_relay_disk_bytes", "Size of the database's files.", func() float64 { return float64(r.st.diskUsage()) }),
		gauge("fieldmesh_relay_topics", "Topics carried.", func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			return float64(len(r.carried))
		}),
		gauge("fieldmesh_relay_enrolled_peers", "Devices enrolled on their current connection.", func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			return float64(len(r.enrolled))
		}),
		topicUsage{r},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, v := range []string{"sync", "gossip"} {
		m.stored.WithLabelValues(v)
	}
	for _, v := range []string{"topic_quota", "quota", "retention"} {
		m.dropped.WithLabelValues(v)
	}
	for _, v := range []string{"malformed", "wrong_topic", "not_enrolled", "future", "rate"} {
		m.refused.WithLabelValues(v)
	}
	for _, v := range []string{"enrolled", "not_carried", "bad_proof", "not_member", "bad_roster"} {
		m.enrolments.WithLabelValues(v)
	}
	return m
}

// MetricsHandler serves the relay's metrics, go-libp2p's own (host, resource manager, circuit relay
// service) and the Go runtime's in the Prometheus text format. Serve it on a local address only.
func (r *Relay) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// counts reads a counter vector with one label, by label value, leaving out the values named in skip.
func (m *metrics) counts(v *prometheus.CounterVec, skip ...string) map[string]int64 {
	out := make(map[string]int64)
	ch := make(chan prometheus.Metric, 16)
	go func() { v.Collect(ch); close(ch) }()
	for c := range ch {
		var d dto.Metric
		if c.Write(&d) != nil || len(d.GetLabel()) != 1 || slices.Contains(skip, d.GetLabel()[0].GetValue()) {
			continue
		}
		out[d.GetLabel()[0].GetValue()] = int64(d.GetCounter().GetValue())
	}
	return out
}

// topicUsage reports, for each carried topic by its short tag, the envelopes and bytes stored and the
// devices enrolled now.
type topicUsage struct{ r *Relay }

var (
	topicEnvelopesDesc = prometheus.NewDesc("fieldmesh_relay_topic_envelopes", "Envelopes stored now, by topic (short tag).", []string{"topic"}, nil)
	topicBytesDesc     = prometheus.NewDesc("fieldmesh_relay_topic_bytes", "Bytes the quota counts now, by topic (short tag).", []string{"topic"}, nil)
	topicEnrolledDesc  = prometheus.NewDesc("fieldmesh_relay_topic_enrolled", "Devices enrolled now, by topic (short tag).", []string{"topic"}, nil)
)

func (topicUsage) Describe(ch chan<- *prometheus.Desc) {
	ch <- topicEnvelopesDesc
	ch <- topicBytesDesc
	ch <- topicEnrolledDesc
}

func (u topicUsage) Collect(ch chan<- prometheus.Metric) {
	for _, t := range u.r.Status().Topics {
		ch <- prometheus.MustNewConstMetric(topicEnvelopesDesc, prometheus.GaugeValue, float64(t.Envelopes), t.Topic)
		ch <- prometheus.MustNewConstMetric(topicBytesDesc, prometheus.GaugeValue, float64(t.Bytes), t.Topic)
		ch <- prometheus.MustNewConstMetric(topicEnrolledDesc, prometheus.GaugeValue, float64(t.Connected), t.Topic)
	}
}
