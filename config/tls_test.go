package config

import (
	"crypto/x509"
	"strings"
	"testing"
)

func TestTLSConfig(t *testing.T) {
	files := BrokerTLS{
		CAFile:   "testdata/tls/ca.pem",
		CertFile: "testdata/tls/client.pem",
		KeyFile:  "testdata/tls/client-key.pem",
	}
	for _, broker := range []string{BrokerEmbedded, "tcp://b:1883", "mqtt://b:1883", "ws://b:80/mqtt"} {
		m := MQTT{Broker: broker, TLS: files}
		if c, err := m.TLSConfig(); c != nil || err != nil {
			t.Errorf("%s: TLSConfig() = %v, %v; want nil, nil", broker, c, err)
		}
	}

	m := MQTT{Broker: "SSL://broker.plant.local:8883", TLS: files}
	c, err := m.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "broker.plant.local" || c.RootCAs == nil || len(c.Certificates) != 1 || c.MinVersion == 0 {
		t.Fatalf("config %+v", c)
	}
	// The client certificate chains to the CA the config trusts: both come from files
	// made together (testdata/tls/README.md).
	leaf := c.Certificates[0].Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("client certificate does not verify against ca_file: %v", err)
	}

	m = MQTT{Broker: "wss://10.0.0.5/mqtt", TLS: BrokerTLS{ServerName: "broker.plant.local"}}
	if c, err := m.TLSConfig(); err != nil || c.ServerName != "broker.plant.local" || c.RootCAs != nil || len(c.Certificates) != 0 {
		t.Errorf("server_name only: %+v, %v", c, err)
	}
	m = MQTT{Broker: "mqtts://10.0.0.5:8883"}
	if c, err := m.TLSConfig(); err != nil || c.ServerName != "10.0.0.5" || c.RootCAs != nil {
		t.Errorf("no tls keys: %+v, %v; want the system roots and the URL's host", c, err)
	}

	// Every fault at once, each naming its key and file.
	m = MQTT{Broker: "ssl://b:8883", TLS: BrokerTLS{
		CAFile:   "testdata/tls/not-pem.pem",
		CertFile: "testdata/tls/client.pem",
		KeyFile:  "testdata/tls/other-key.pem",
	}}
	c, err = m.TLSConfig()
	if c != nil || err == nil {
		t.Fatalf("TLSConfig() = %v, %v; want an error", c, err)
	}
	for _, want := range []string{
		`mqtt.tls.ca_file: "testdata/tls/not-pem.pem" is not PEM`,
		`mqtt.tls.key_file: "testdata/tls/other-key.pem" does not match the certificate in mqtt.tls.cert_file "testdata/tls/client.pem"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestTLSCombinedFile takes certificate and key from one file, as some tools write them.
func TestTLSCombinedFile(t *testing.T) {
	dir := t.TempDir()
	combined := dir + "/client-and-key.pem"
	writeConcat(t, combined, "testdata/tls/client.pem", "testdata/tls/client-key.pem")
	m := MQTT{Broker: "ssl://b:8883", TLS: BrokerTLS{CertFile: combined, KeyFile: combined}}
	if c, err := m.TLSConfig(); err != nil || len(c.Certificates) != 1 {
		t.Fatalf("TLSConfig() = %v, %v", c, err)
	}
}
