package publish

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/spool"
)

// Defaults for the zero values of Config.
const (
	DefaultQoS                  = 1
	DefaultKeepAlive            = 30 * time.Second
	DefaultConnectTimeout       = 10 * time.Second
	DefaultWriteTimeout         = 10 * time.Second
	DefaultMaxReconnectInterval = 10 * time.Second
	DefaultMaxInflight          = 256
	DefaultQueueSize            = 1024
	DefaultDrainTimeout         = 5 * time.Second
)

// DefaultBreakerName names the publisher's circuit breaker in metrics and logs.
const DefaultBreakerName = "mqtt"

// maxInflightLimit keeps the window well inside MQTT's 16-bit packet id space, which the
// status and event messages share with results.
const maxInflightLimit = 16384

// Config configures a Publisher. Zero values take the defaults above. Validation errors
// name fields by their YAML keys under mqtt.
type Config struct {
	// Broker is the broker URL: tcp://host:1883, ssl://host:8883 (also tls://, mqtts://),
	// ws://host:port/path or wss://. For `mqtt.broker: embedded` the caller passes
	// "tcp://" + Broker.Addr() of the embedded broker.
	Broker string `yaml:"broker"`
	// ClientID names the persistent session on the broker, so it must stay the same
	// across restarts; default "edged-{site}-{line}-{node}".
	ClientID string      `yaml:"client_id"`
	Username string      `yaml:"username"`
	Password string      `yaml:"password"`
	TLS      *tls.Config `yaml:"-"`
	// QoS for results and events: 0, 1 or 2; nil means DefaultQoS. The status topic is
	// always published at QoS 1 or higher, since a lost `offline` would leave a dead box
	// looking alive.
	QoS *byte `yaml:"qos"`
	// Format is the result payload: FormatJSON (the default, also for "") or
	// FormatSparkplugB. With Sparkplug B results go out as NDATA on
	// spBv1.0/{group_id}/NDATA/{edge_node_id}, encoded as they are sent (seq belongs
	// to the connection), an NBIRTH replaces the `online` status on every connection
	// and an NDEATH the `offline` one, as will and at shutdown; events stay JSON on
	// the event topic. It needs a Spool: each connection gets a client of its own,
	// whose will carries that connection's bdSeq.
	Format string `yaml:"format"`
	// Sparkplug names the Sparkplug B edge node; used with FormatSparkplugB only.
	Sparkplug SparkplugConfig `yaml:"sparkplug"`
	// Site, Line and Node are the topic levels after edged/v1/.
	Site string `yaml:"site"`
	Line string `yaml:"line"`
	Node string `yaml:"node"`
	// KeepAlive is the MQTT keep-alive: how soon a dead connection is noticed.
	KeepAlive      time.Duration `yaml:"keep_alive"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// WriteTimeout bounds one write to the connection; a broker that stops reading
	// fails the write instead of stalling delivery forever.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxReconnectInterval caps the backoff between connection attempts.
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval"`
	// MaxInflight is how many messages may await the broker's acknowledgement at once.
	MaxInflight int `yaml:"max_inflight"`
	// QueueSize is how many results Publish buffers before it blocks its caller.
	QueueSize int `yaml:"queue_size"`
	// DrainTimeout bounds how long Run keeps delivering queued results after its
	// context ends; what is left then goes to the Spool or, without one, is reported
	// undelivered through OnResult.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Spool, when set, keeps what the broker has not acknowledged on disk: results
	// (and events) go to it whenever they cannot go out directly (no connection, a
	// failed send, older records still waiting), and are replayed from it in order,
	// before anything newer, once the broker is back, in this Run or a later one. The
	// publisher appends, reads and acknowledges records but never closes the spool: its
	// owner opens it before NewPublisher and closes it after Run returned; one
	// publisher at a time may use it. With a spool the broker session is still
	// persistent (clean only at QoS 2 and with Sparkplug B), but the spool, not paho,
	// re-sends what was not acknowledged. Nil keeps results in memory only, and paho
	// re-sends what was in flight.
	Spool *spool.Spool `yaml:"-"`
	// Breaker guards the live path to the broker: when too many sends fail, it opens and
	// the publisher sends nothing live, results go to the Spool (without one they wait
	// in the queue), and connection attempts go on with their backoff. Once it is
	// half-open the replay of spooled records probes the broker, and their
	// acknowledgement closes it. Zero values are the breaker package's defaults; Name
	// defaults to DefaultBreakerName.
	Breaker breaker.Config `yaml:"breaker"`
	// BreakerMetrics are the process's breaker metrics, shared by its breakers; nil
	// makes a set registered with NewPublisher's registerer.
	BreakerMetrics *breaker.Metrics `yaml:"-"`
	// OnResult, when set, is called once for every result Publish accepted: with a nil
	// error when the broker acknowledged it (at QoS 0: when it was written), with
	// ErrSpooled when it went to the Spool instead (the spool delivers it later; no
	// second call follows), or with an error wrapping ErrNotDelivered when it was given
	// up: at shutdown without a spool, or when the spool could not take it. It runs on
	// Run's goroutine and must not block.
	OnResult func(r *Result, err error) `yaml:"-"`
	// Commands, when set, receives every message on edged/v1/{site}/{line}/{node}/cmd/{verb}
	// (a model push, an activation): the publisher subscribes at QoS 1 on each
	// connection. It runs on the MQTT client's goroutine and must not block: hand the
	// command to a queue of its own.
	Commands func(verb string, payload []byte) `yaml:"-"`
}

// brokerSchemes are the URL schemes paho can dial.
var brokerSchemes = []string{"tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss"}

// Validate checks c without changing it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Broker == "" {
		bad("mqtt.broker: missing; set a URL such as tcp://127.0.0.1:1883, or embedded")
	} else if u, err := url.Parse(c.Broker); err != nil {
		bad("mqtt.broker: %q is not a URL: %w", c.Broker, err)
	} else if !slices.Contains(brokerSchemes, u.Scheme) {
		bad("mqtt.broker: %q has scheme %q; use one of %s", redact(c.Broker), u.Scheme, strings.Join(brokerSchemes, ", "))
	} else if u.Host == "" {
		bad("mqtt.broker: %q has no host", redact(c.Broker))
	}
	for _, f := range []struct{ key, v string }{{"mqtt.site", c.Site}, {"mqtt.line", c.Line}, {"mqtt.node", c.Node}} {
		if err := checkTopicLevel(f.v); err != nil {
			bad("%s: %q %w", f.key, f.v, err)
		}
	}
	for _, f := range []struct {
		key string
		v   time.Duration
	}{
		{"mqtt.write_timeout", c.WriteTimeout},
		{"mqtt.max_reconnect_interval", c.MaxReconnectInterval},
		{"mqtt.drain_timeout", c.DrainTimeout},
	} {
		if f.v < 0 {
			bad("%s: %s is negative", f.key, f.v)
		}
	}
	if c.MaxInflight < 0 || c.MaxInflight > maxInflightLimit {
		bad("mqtt.max_inflight: %d is out of range 1..%d", c.MaxInflight, maxInflightLimit)
	}
	if c.QueueSize < 0 {
		bad("mqtt.queue_size: %d is negative", c.QueueSize)
	}
	switch c.Format {
	case "", FormatJSON:
	case FormatSparkplugB:
		if c.Spool == nil {
			bad("mqtt.format: %q needs the spool (Config.Spool): Sparkplug B takes a client per connection", c.Format)
		}
		for _, f := range []struct{ key, v string }{{"mqtt.sparkplug.group_id", c.Sparkplug.GroupID}, {"mqtt.sparkplug.edge_node_id", c.Sparkplug.EdgeNodeID}} {
			if f.v == "" {
				continue // the default, from the topic levels checked above
			}
			if err := checkTopicLevel(f.v); err != nil {
				bad("%s: %q %w", f.key, f.v, err)
			}
		}
	default:
		bad("mqtt.format: %q is not one of %s, %s", c.Format, FormatJSON, FormatSparkplugB)
	}
	l := c.Live()
	l.Breaker.Name = c.breakerName()
	if err := l.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) breakerName() string {
	if c.Breaker.Name == "" {
		return DefaultBreakerName
	}
	return c.Breaker.Name
}

// Live is what Publisher.Reconfigure may change while Run runs. Zero values take the
// defaults, as in Config.
type Live struct {
	// QoS applies to results and events queued after the change.
	QoS *byte
	// Username and Password are not used when Config.Broker carries credentials,
	// which win, as they do at start.
	Username string
	Password string
	// KeepAlive, ConnectTimeout and the credentials take effect through a reconnect.
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	// Breaker replaces the circuit breaker with a new, closed one when its settings
	// differ; Name and Log are the running breaker's and are not changed.
	Breaker breaker.Config
}

// Live returns the part of c that may change while the publisher runs.
func (c Config) Live() Live {
	return Live{
		QoS:            c.QoS,
		Username:       c.Username,
		Password:       c.Password,
		KeepAlive:      c.KeepAlive,
		ConnectTimeout: c.ConnectTimeout,
		Breaker:        c.Breaker,
	}
}

// Validate checks l without changing it; errors name fields by their YAML keys under
// mqtt.
func (l Live) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if l.QoS != nil && *l.QoS > 2 {
		bad("mqtt.qos: %d is not one of 0, 1, 2", *l.QoS)
	}
	if l.ConnectTimeout < 0 {
		bad("mqtt.connect_timeout: %s is negative", l.ConnectTimeout)
	}
	if l.KeepAlive < 0 || (l.KeepAlive > 0 && l.KeepAlive < time.Second) {
		bad("mqtt.keep_alive: %s is below 1s; MQTT counts keep-alive in whole seconds", l.KeepAlive)
	}
	if err := l.Breaker.Validate(); err != nil {
		bad("mqtt.breaker: %w", err)
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of l with zero values replaced by the defaults.
func (l Live) withDefaults() Live {
	if l.QoS == nil {
		l.QoS = new(byte(DefaultQoS))
	} else {
		l.QoS = new(*l.QoS) // the caller's pointer must not change what runs
	}
	setDefault(&l.KeepAlive, DefaultKeepAlive)
	setDefault(&l.ConnectTimeout, DefaultConnectTimeout)
	l.Breaker = l.Breaker.WithDefaults()
	return l
}

// withDefaults returns a copy of c with zero values replaced by the defaults.
func (c Config) withDefaults() Config {
	if c.ClientID == "" {
		c.ClientID = "edged-" + c.Site + "-" + c.Line + "-" + c.Node
	}
	if c.QoS == nil {
		c.QoS = new(byte(DefaultQoS))
	}
	setDefault(&c.Format, FormatJSON)
	setDefault(&c.Sparkplug.GroupID, c.Site)
	setDefault(&c.Sparkplug.EdgeNodeID, c.Line+"-"+c.Node)
	setDefault(&c.KeepAlive, DefaultKeepAlive)
	setDefault(&c.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.MaxReconnectInterval, DefaultMaxReconnectInterval)
	setDefault(&c.MaxInflight, DefaultMaxInflight)
	setDefault(&c.QueueSize, DefaultQueueSize)
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	c.Breaker.Name = c.breakerName()
	c.Breaker = c.Breaker.WithDefaults()
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// checkTopicLevel rejects what would change the topic's shape: an empty level, a level
// separator, or a wildcard (a subscriber's filter would match more than meant).
func checkTopicLevel(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case strings.ContainsAny(s, "/+#\x00"):
		return errors.New("must not contain '/', '+', '#' or NUL: it is an MQTT topic level")
	}
	return nil
}

// redact hides a password in a broker URL so that it never reaches a log or an error.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
