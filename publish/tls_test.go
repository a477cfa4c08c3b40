package publish

import (
	"crypto/tls"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/internal/testmqtt"
)

// brokerTLS builds the publisher's TLS settings the way the daemon does: from the
// mqtt.tls keys of the config, through config.MQTT.TLSConfig.
func brokerTLS(t *testing.T, url string, keys config.BrokerTLS) *tls.Config {
	t.Helper()
	m := config.MQTT{Broker: url, TLS: keys}
	c, err := m.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c == nil {
		t.Fatalf("no TLS config for %s", url)
	}
	return c
}

// subscribeTLS is subscribe for a TLS broker.
func subscribeTLS(t *testing.T, url string, tlsc *tls.Config, filter string) *subscriber {
	t.Helper()
	s := &subscriber{msgs: make(chan mqtt.Message, 1024)}
	s.client = mqtt.NewClient(mqtt.NewClientOptions().
		AddBroker(url).
		SetClientID(uniqueID("sub")).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetOrderMatters(true).
		SetTLSConfig(tlsc))
	if tok := s.client.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	tok := s.client.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { s.msgs <- m })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return s
}

// TestTLSDelivers publishes results over TLS to mosquitto, verified against the test
// CA, with and without a client certificate that the broker requires.
func TestTLSDelivers(t *testing.T) {
	const n = 50
	for _, tc := range []struct {
		name       string
		clientCert bool
	}{
		{"server-auth", false},
		{"client-cert", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, certs := testmqtt.StartTLS(t, testmqtt.TLSOptions{RequireClientCert: tc.clientCert})
			keys := config.BrokerTLS{CAFile: certs.CAFile}
			if tc.clientCert {
				keys.CertFile, keys.KeyFile = certs.ClientCertFile, certs.ClientKeyFile
			}
			cfg := testConfig(url)
			cfg.TLS = brokerTLS(t, url, keys)
			sub := subscribeTLS(t, url, certs.ClientTLS(tc.clientCert), "edged/v1/s1/l1/n1/result/#")
			p := startPublisher(t, cfg)
			results := makeResults(n)
			publishAll(t, p, results)

			want := map[string]bool{}
			for _, r := range results {
				want[r.ID] = true
			}
			for range n {
				m := sub.next(t, "results over TLS")
				var got Result
				if err := json.Unmarshal(m.Payload(), &got); err != nil {
					t.Fatalf("payload on %s is not a result: %v", m.Topic(), err)
				}
				if !want[got.ID] {
					t.Fatalf("unknown or repeated result id %q", got.ID)
				}
				delete(want, got.ID)
			}
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st != (Stats{Accepted: n, Acked: n}) {
				t.Errorf("stats %+v, want %d accepted and acked", st, n)
			}
			if strings.Contains(p.log.String(), "level=ERROR") {
				t.Errorf("error logged:\n%s", p.log.String())
			}
		})
	}
}

// TestTLSRefused checks that a publisher the broker's TLS refuses, or that refuses the
// broker's certificate, stays unconnected, keeps trying, and says why once, in one line
// at error level that names the certificate problem.
func TestTLSRefused(t *testing.T) {
	for _, tc := range []struct {
		name       string
		clientCert bool // the broker requires one
		tls        func(t *testing.T, url string, certs *testmqtt.Certs) *tls.Config
		want       []string // in the error line
	}{
		{
			name: "wrong-ca",
			tls: func(t *testing.T, url string, _ *testmqtt.Certs) *tls.Config {
				return brokerTLS(t, url, config.BrokerTLS{CAFile: testmqtt.NewCerts(t).CAFile})
			},
			want: []string{"TLS handshake failed", "certificate signed by unknown authority", "check mqtt.tls.ca_file"},
		},
		{
			name: "wrong-server-name",
			tls: func(t *testing.T, url string, certs *testmqtt.Certs) *tls.Config {
				return brokerTLS(t, url, config.BrokerTLS{CAFile: certs.CAFile, ServerName: "broker.plant.example"})
			},
			want: []string{"TLS handshake failed", "broker.plant.example", "mqtt.tls.server_name"},
		},
		{
			name:       "no-client-cert",
			clientCert: true,
			tls: func(t *testing.T, url string, certs *testmqtt.Certs) *tls.Config {
				return brokerTLS(t, url, config.BrokerTLS{CAFile: certs.CAFile})
			},
			want: []string{"requires a client certificate and closed the connection without one", "set mqtt.tls.cert_file and mqtt.tls.key_file"},
		},
		{
			name:       "untrusted-client-cert",
			clientCert: true,
			tls: func(t *testing.T, url string, certs *testmqtt.Certs) *tls.Config {
				other := testmqtt.NewCerts(t)
				return brokerTLS(t, url, config.BrokerTLS{CAFile: certs.CAFile, CertFile: other.ClientCertFile, KeyFile: other.ClientKeyFile})
			},
			want: []string{"refused the client certificate", "check that mqtt.tls.cert_file is signed by a CA the broker trusts"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, certs := testmqtt.StartTLS(t, testmqtt.TLSOptions{RequireClientCert: tc.clientCert})
			cfg := testConfig(url)
			cfg.TLS = tc.tls(t, url, certs)
			p := startPublisher(t, cfg)
			// Several attempts, so that a second error line would have shown.
			waitFor(t, "three connection attempts", func() bool {
				return strings.Contains(p.log.String(), "attempt=3")
			})
			if p.Connected() {
				t.Fatal("connected")
			}
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			errLines := regexp.MustCompile(`(?m)^.*level=ERROR.*$`).FindAllString(p.log.String(), -1)
			if len(errLines) != 1 {
				t.Fatalf("%d error lines, want 1:\n%s", len(errLines), p.log.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errLines[0], w) {
					t.Errorf("error line lacks %q:\n%s", w, errLines[0])
				}
			}
			t.Logf("error line: %s", errLines[0])
		})
	}
}

// TestTLSReconnects kills the TLS broker under a connected publisher and starts it
// again: the publisher makes a new TLS connection and delivers what it was given.
func TestTLSReconnects(t *testing.T) {
	s := testmqtt.StartServer(t, testmqtt.Options{TLS: &testmqtt.TLSOptions{RequireClientCert: true}})
	certs := s.Certs()
	cfg := testConfig(s.URL())
	cfg.TLS = brokerTLS(t, s.URL(), config.BrokerTLS{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile})
	p := startPublisher(t, cfg)
	results := makeResults(20)
	publishAll(t, p, results[:10])
	waitFor(t, "10 results acknowledged", func() bool { return p.Stats().Acked == 10 })

	s.Kill()
	waitFor(t, "publisher to notice the broker is gone", func() bool { return !p.Connected() })
	publishAll(t, p, results[10:])
	s.Start()
	waitFor(t, "20 results acknowledged after the restart", func() bool { return p.Stats().Acked == 20 })
	if !p.Connected() {
		t.Error("not connected after the restart")
	}
}
