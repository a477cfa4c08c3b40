package testmqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServesMQTT(t *testing.T) {
	url := Start(t)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("testmqtt").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", url, tok.Error())
	}
	defer c.Disconnect(100)

	got := make(chan string, 1)
	if tok := c.Subscribe("testmqtt/ping", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("testmqtt/ping", 1, false, "pong"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p != "pong" {
			t.Fatalf("payload %q, want pong", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message not delivered by mosquitto")
	}
}

func TestStartTwiceGivesTwoBrokers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("both brokers on %s", a)
	}
}

// connect opens a paho client to url; tlsc may be nil.
func connect(t *testing.T, url string, tlsc *tls.Config, id string, clean bool) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).
		SetProtocolVersion(4).SetCleanSession(clean).SetConnectTimeout(5 * time.Second)
	if tlsc != nil {
		o.SetTLSConfig(tlsc)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("connect to %s: no answer", url)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// roundTrip publishes on a topic of its own through c and waits for it to come back.
func roundTrip(t *testing.T, c mqtt.Client) {
	t.Helper()
	topic := "testmqtt/" + t.Name()
	got := make(chan string, 1)
	if tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish(topic, 1, false, "pong"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p != "pong" {
			t.Fatalf("payload %q, want pong", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message not delivered by mosquitto")
	}
}

func TestStartTLS(t *testing.T) {
	url, certs := StartTLS(t, TLSOptions{})
	if !strings.HasPrefix(url, "ssl://127.0.0.1:") {
		t.Fatalf("url %s", url)
	}
	c, err := connect(t, url, certs.ClientTLS(false), "tls", true)
	if err != nil {
		t.Fatalf("connect with the test CA: %v", err)
	}
	defer c.Disconnect(100)
	roundTrip(t, c)

	// By name too: the certificate is valid for localhost.
	c2, err := connect(t, strings.Replace(url, "127.0.0.1", "localhost", 1), certs.ClientTLS(false), "tls-localhost", true)
	if err != nil {
		t.Fatalf("connect by localhost: %v", err)
	}
	c2.Disconnect(100)

	// Another CA's trust fails the handshake, on the client's side.
	_, err = connect(t, url, NewCerts(t).ClientTLS(false), "tls-wrong-ca", true)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("connect trusting another CA: %v, want an unknown authority error", err)
	}
}

func TestStartTLSClientCert(t *testing.T) {
	url, certs := StartTLS(t, TLSOptions{RequireClientCert: true})
	for _, f := range []string{certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
	c, err := connect(t, url, certs.ClientTLS(true), "tls-cert", true)
	if err != nil {
		t.Fatalf("connect with a client certificate: %v", err)
	}
	defer c.Disconnect(100)
	roundTrip(t, c)

	if _, err := connect(t, url, certs.ClientTLS(false), "tls-no-cert", true); err == nil {
		t.Fatal("connected without the required client certificate")
	}
	other := NewCerts(t).ClientTLS(true)
	other.RootCAs = certs.Pool
	if _, err := connect(t, url, other, "tls-foreign-cert", true); err == nil {
		t.Fatal("connected with a client certificate from another CA")
	}
}

// TestServerRestart kills and stops the broker and starts it again: the URL stays, and
// with persistence a subscriber's session survives Stop.
func TestServerRestart(t *testing.T) {
	s := StartServer(t, Options{Persistence: true})
	url := s.URL()
	for i := range 3 {
		s.Kill()
		if s.Running() {
			t.Fatal("running after Kill")
		}
		if _, err := connect(t, url, nil, "restart-probe", true); err == nil {
			t.Fatalf("round %d: connected to a killed broker", i)
		}
		s.Kill() // no-op when stopped
		s.Start()
		if !s.Running() || s.URL() != url {
			t.Fatalf("round %d: after Start running=%v url %s", i, s.Running(), s.URL())
		}
	}
	// Stop saves the session; the subscription made before it must still be there.
	sub, err := connect(t, url, nil, "restart-sub", false)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	if tok := sub.Subscribe("testmqtt/restart", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.Disconnect(100)
	s.Stop()
	s.Stop()
	s.Start()
	pub, err := connect(t, url, nil, "restart-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	if tok := pub.Publish("testmqtt/restart", 1, false, "kept"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	pub.Disconnect(100)
	sub = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("restart-sub").SetCleanSession(false).
		SetAutoReconnect(false).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("reconnect subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	select {
	case p := <-got:
		if p != "kept" {
			t.Fatalf("payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber's session did not survive Stop and Start")
	}
}
