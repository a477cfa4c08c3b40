package spool

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes Stats at scrape time, from one consistent snapshot.
type collector struct {
	s                                 *Spool
	bytes, records, oldestAge         *prometheus.Desc
	dropped, corrupt, appended, acked *prometheus.Desc
}

func newCollector(s *Spool) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("edged_mqtt_spool_"+name, help, labels, nil)
	}
	return &collector{
		s:         s,
		bytes:     d("bytes", "Bytes of segment files in the MQTT result spool."),
		records:   d("records", "Records in the MQTT result spool not yet acknowledged by the broker."),
		oldestAge: d("oldest_age_seconds", "Age of the oldest unacknowledged record in the MQTT result spool; 0 when empty."),
		dropped:   d("dropped_total", "Records dropped from the MQTT result spool before delivery.", "reason"),
		corrupt:   d("corrupt_total", "Damaged records or byte ranges found in the MQTT result spool."),
		appended:  d("appended_total", "Records appended to the MQTT result spool."),
		acked:     d("acked_total", "Records in the MQTT result spool acknowledged by the broker."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.records, c.oldestAge, c.dropped, c.corrupt, c.appended, c.acked} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st, diskFull := c.s.snapshot()
	age := 0.0
	if !st.Oldest.IsZero() {
		age = max(time.Since(st.Oldest).Seconds(), 0)
	}
	g := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	k := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	g(c.bytes, float64(st.Bytes))
	g(c.records, float64(st.Records))
	g(c.oldestAge, age)
	k(c.dropped, st.Dropped-diskFull, "full")
	k(c.dropped, diskFull, "disk_full")
	k(c.corrupt, st.Corrupt)
	k(c.appended, st.Appended)
	k(c.acked, st.Acked)
}
