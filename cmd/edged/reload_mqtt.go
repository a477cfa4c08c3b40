package main

import (
	"strings"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/publish"
)

// liveMQTT is the publisher's part of a config that a reload applies while running.
func liveMQTT(m *config.MQTT) publish.Live {
	qos := byte(m.QoS)
	return publish.Live{
		QoS:            &qos,
		Username:       m.Username,
		Password:       m.Password,
		KeepAlive:      m.KeepAlive.Std(),
		ConnectTimeout: m.ConnectTimeout.Std(),
		Breaker:        mqttBreaker(m.Breaker),
	}
}

// publisherChange plans the publisher's part of a reload: QoS, credentials, keep-alive,
// connect timeout and the breaker's settings. The publisher reconnects for what the
// connection carries; nothing in flight is lost.
func (d *daemon) publisherChange(cur, next *config.MQTT) (change, bool) {
	var keys []string
	for _, k := range []struct {
		name string
		diff bool
	}{
		{"qos", cur.QoS != next.QoS},
		{"username", cur.Username != next.Username},
		{"password", cur.Password != next.Password},
		{"keepalive", cur.KeepAlive != next.KeepAlive},
		{"connect_timeout", cur.ConnectTimeout != next.ConnectTimeout},
		{"breaker", cur.Breaker != next.Breaker},
	} {
		if k.diff {
			keys = append(keys, "mqtt."+k.name)
		}
	}
	if len(keys) == 0 {
		return change{}, false
	}
	live := liveMQTT(next)
	return change{
		what:  strings.Join(keys, ", "),
		check: live.Validate,
		apply: func() error { return d.pub.Reconfigure(live) },
	}, true
}

// mergeLiveMQTT copies the keys the publisher takes live from src into dst.
func mergeLiveMQTT(dst, src *config.MQTT) {
	dst.QoS, dst.Username, dst.Password = src.QoS, src.Username, src.Password
	dst.KeepAlive, dst.ConnectTimeout, dst.Breaker = src.KeepAlive, src.ConnectTimeout, src.Breaker
}

// mqttBreaker is the publisher's breaker config.
func mqttBreaker(b config.Breaker) breaker.Config {
	c := breakerConfig(b)
	c.Name = publish.DefaultBreakerName
	return c
}
