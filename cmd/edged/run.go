package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgedrun/edged/api"
	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/dpi"
	"github.com/edgedrun/edged/drivers"
	_ "github.com/edgedrun/edged/drivers/all" // every built-in driver type
	"github.com/edgedrun/edged/health"
	"github.com/edgedrun/edged/hwprofiles"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/linepage"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
	"github.com/edgedrun/edged/models/swap"
	"github.com/edgedrun/edged/pipeline"
	"github.com/edgedrun/edged/publish"
	"github.com/edgedrun/edged/spool"
	"github.com/edgedrun/edged/writeback"
)

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("edged run", flag.ContinueOnError)
	path := fs.String("c", "", "config file (default: the embedded demo config)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, prof, reasons, err := loadConfig(*path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log, os.Stderr, level)
	tuneGC(prof.MemoryBudgetMB, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := newDaemon(cfg, prof, reasons, log)
	if err != nil {
		return err
	}
	d.path, d.level = *path, level
	// Registered before the daemon runs, so a SIGHUP sent as soon as edged logs its start
	// reloads rather than kills it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d.hup = hup
	go func() {
		// A second signal while shutting down means the operator wants out now.
		<-ctx.Done()
		stop()
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		<-again
		log.Error("second signal: exiting without finishing the shutdown")
		os.Exit(1)
	}()
	return d.run(ctx)
}

// loadConfig reads the file (or the embedded demo config), applies the hardware profile
// and validates the result.
func loadConfig(path string) (*config.Config, *hwprofiles.Profile, []string, error) {
	var cfg *config.Config
	var err error
	if path == "" {
		cfg, err = config.Default()
	} else {
		cfg, err = config.Load(path)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	prof, reasons, err := hwprofiles.Resolve(cfg.HWProfile, os.DirFS("/"), runtime.GOARCH, runtime.NumCPU())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hwprofile: %w", err)
	}
	cfg.ApplyProfile(prof)
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, err
	}
	return cfg, prof, reasons, nil
}

// newLogger makes the process logger; its level is lv, which a config reload changes.
func newLogger(c config.Log, w *os.File, lv *slog.LevelVar) *slog.Logger {
	lv.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		level = slog.LevelInfo
	}
	return level
}

// daemon is edged running: every component built, none started until run.
type daemon struct {
	// path is the config file ("" for the embedded demo config), level the log level
	// and hup the SIGHUP channel: what a reload needs.
	path   string
	level  *slog.LevelVar
	hup    <-chan os.Signal
	reload *reloader
	// running is the config in effect: cfg with what reloads changed.
	running atomic.Pointer[config.Config]
	cfg     *config.Config
	prof    *hwprofiles.Profile
	log     *slog.Logger
	reg     *prometheus.Registry
	backend inference.Backend
	spool   *spool.Spool
	// sessions are the models' sessions until the swap manager takes them over.
	sessions []inference.Session
	// models are the models loaded at start; swaps serves the pushes after it.
	models map[string]*pipeline.Model
	swaps  *swap.Manager
	// commands are the MQTT commands waiting for runCommands.
	commands chan mqttCommand
	broker   *publish.Broker
	pub      *publish.Publisher
	breakers *breaker.Metrics
	drivers  map[string]drivers.Driver
	// verdicts and writeback are the sinks in front of the publisher; writeback is
	// nil when no inspection writes to the line.
	verdicts  *pipeline.Verdicts
	writeback *writeback.Sink
	pipe      *pipeline.Pipeline
	// proxies are the Modbus traffic guards; alerts takes their alerts to the broker.
	proxies []*dpi.Proxy
	alerts  *alertQueue
	// scores raises and clears the inspections' alerts; nil when none has one.
	scores *health.Sink
	// page is the line page: it sees every result right after the waiting drivers.
	page *linepage.Page
	// power reads the board's power rails; nil off Jetson boards.
	power   *hwprofiles.PowerMeter
	eff     efficiency
	http    *api.Server
	started time.Time
}

func newDaemon(cfg *config.Config, prof *hwprofiles.Profile, reasons []string, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, prof: prof, log: log, reg: prometheus.NewRegistry(), models: map[string]*pipeline.Model{}, drivers: map[string]drivers.Driver{},
		commands: make(chan mqttCommand, commandQueueSize)}
	d.running.Store(cfg)
	defer func() {
		if err != nil {
			d.close() // what was built so far: sessions and the runtime
		}
	}()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if d.breakers, err = breaker.NewMetrics(d.reg); err != nil {
		return nil, err
	}
	if d.reload, err = newReloader(d.reg); err != nil {
		return nil, err
	}
	log.Info("hardware profile", "profile", prof.Name, "why", strings.Join(reasons, "; "))

	if d.backend, err = inference.Open(cfg.Runtime.Backend, cfg.Runtime.ORTLibrary); err != nil {
		return nil, err
	}
	checkHardware(cfg, prof, inference.Describe(d.backend).Library, log)
	if d.power, err = hwprofiles.NewPowerMeter(os.DirFS("/"), d.reg); err != nil {
		return nil, err
	}
	if d.power != nil {
		d.power.Log = log.With("component", "power")
	}
	repo, err := models.OpenRepository(cfg.Models.Dir)
	if err != nil {
		return nil, err
	}
	opts := inference.SessionOptions{
		IntraOpThreads:     cfg.Runtime.IntraOpThreads,
		InterOpThreads:     cfg.Runtime.InterOpThreads,
		Spinning:           cfg.Runtime.Spinning == config.SpinningOn,
		ExecutionProviders: cfg.Runtime.ExecutionProviders,
		Log:                log,
	}
	for _, in := range cfg.Inspections {
		if _, ok := d.models[in.Model]; ok {
			continue
		}
		m, onnx, err := loadModel(repo, in.Model, log)
		if err != nil {
			return nil, fmt.Errorf("inspection %q: %w", in.Name, err)
		}
		sess, err := d.backend.Load(m, onnx, opts)
		if err != nil {
			return nil, fmt.Errorf("inspection %q: %w", in.Name, err)
		}
		d.sessions = append(d.sessions, sess)
		d.models[in.Model] = &pipeline.Model{Manifest: m, Session: sess}
	}

	// The sink chain: drivers waiting for verdicts (uploads) see each result first,
	// then its writes to the line are queued, then the publisher takes it.
	var inspections []pipeline.Inspection
	for _, in := range cfg.Inspections {
		inspections = append(inspections, pipeline.Inspection{
			Name: in.Name, Source: in.Source, Model: d.models[in.Model], Threshold: float32(in.Threshold),
			FailSafe: in.FailSafe,
		})
	}
	d.verdicts = pipeline.NewVerdicts(nil, inspections)

	var sources []pipeline.Source
	for i := range cfg.Sources {
		s := &cfg.Sources[i]
		f, err := drivers.Lookup(s.Type)
		if err != nil {
			return nil, fmt.Errorf("sources[%d] %q: %w", i, s.Name, err)
		}
		spec := s.Spec()
		spec.Log = log
		spec.Registerer = d.reg
		spec.Verdicts = d.verdicts
		drv, err := f.New(spec, s.Driver)
		if err != nil {
			return nil, fmt.Errorf("sources[%d] %q: %w", i, s.Name, err)
		}
		src := pipeline.Source{Spec: spec, Driver: drv, Backpressure: s.Backpressure}
		if s.Window != nil {
			wc := *s.Window
			src.Window = &wc
		}
		sources = append(sources, src)
		d.drivers[s.Name] = drv
	}
	brokerURL := cfg.MQTT.Broker
	if brokerURL == config.BrokerEmbedded {
		d.broker = publish.NewBroker(cfg.MQTT.EmbeddedListen, log)
		brokerURL = "tcp://" + cfg.MQTT.EmbeddedListen
	}
	qos := byte(cfg.MQTT.QoS)
	tlsCfg, err := cfg.MQTT.TLSConfig()
	if err != nil {
		return nil, err
	}
	// The spool outlives the publisher's Run: what is still undelivered at shutdown is
	// written to it, and it is closed last.
	d.spool, err = spool.Open(spool.Options{
		Dir:           cfg.MQTT.Spool.Dir,
		MaxBytes:      int64(cfg.MQTT.Spool.MaxBytes),
		SegmentBytes:  int64(cfg.MQTT.Spool.SegmentBytes),
		FsyncInterval: cfg.MQTT.Spool.Fsync.Interval(),
		Log:           log.With("component", "spool"),
		Registerer:    d.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("mqtt.spool: %w", err)
	}
	if n := d.spool.Len(); n > 0 {
		log.Info("results from an earlier run wait in the spool; delivering them first", "records", n, "dir", cfg.MQTT.Spool.Dir)
	}
	d.pub, err = publish.NewPublisher(publish.Config{
		Broker:         brokerURL,
		TLS:            tlsCfg,
		Spool:          d.spool,
		ClientID:       cfg.MQTT.ClientID,
		Username:       cfg.MQTT.Username,
		Password:       cfg.MQTT.Password,
		QoS:            &qos,
		Site:           cfg.Node.Site,
		Line:           cfg.Node.Line,
		Node:           cfg.Node.Name,
		KeepAlive:      cfg.MQTT.KeepAlive.Std(),
		ConnectTimeout: cfg.MQTT.ConnectTimeout.Std(),
		DrainTimeout:   cfg.ShutdownTimeout.Std() / 2,
		Format:         cfg.MQTT.Format,
		Breaker:        mqttBreaker(cfg.MQTT.Breaker),
		BreakerMetrics: d.breakers,
		Commands:       d.onCommand,
		Sparkplug: publish.SparkplugConfig{
			GroupID:     cfg.MQTT.Sparkplug.GroupID,
			EdgeNodeID:  cfg.MQTT.Sparkplug.EdgeNodeID,
			Inspections: inspectionNames(cfg.Inspections),
		},
	}, d.reg, log)
	if err != nil {
		return nil, err
	}
	if len(cfg.ModbusDPI) > 0 {
		if d.alerts, err = newAlertQueue(d.pub, d.reg, log); err != nil {
			return nil, err
		}
		if d.proxies, err = newProxies(cfg, d.alerts.put, d.reg, log); err != nil {
			return nil, err
		}
	}
	var next pipeline.Sink = d.pub
	if d.writeback, err = newWriteback(cfg, d.drivers, d.pub, d.reg, log); err != nil {
		return nil, err
	}
	if d.writeback != nil {
		next = d.writeback
	}
	if d.scores, err = newAlertSink(cfg, d.pub, next, d.reg, log); err != nil {
		return nil, err
	}
	if d.scores != nil {
		next = d.scores
	}
	if d.page, err = linepage.New(linepage.Config{
		Status:     d.status,
		Title:      cfg.Node.Site + "/" + cfg.Node.Line + "/" + cfg.Node.Name,
		Registerer: d.reg,
		Log:        log.With("component", "linepage"),
	}, next); err != nil {
		return nil, err
	}
	d.verdicts.SetNext(d.page)
	d.pipe, err = pipeline.New(pipeline.Config{
		Identity:     pipeline.Identity{Node: cfg.Node.Name},
		RingSize:     cfg.Pipeline.RingSize,
		Workers:      cfg.Pipeline.Workers,
		MaxBatch:     cfg.Pipeline.MaxBatch,
		MaxWait:      cfg.Pipeline.MaxWait.Std(),
		DrainTimeout: cfg.ShutdownTimeout.Std() / 2,
		Breaker:      breakerConfig(cfg.Pipeline.Breaker),
		Breakers:     d.breakers,
		Sink:         d.verdicts,
		Registerer:   d.reg,
		Log:          log,
	}, sources, inspections)
	if err != nil {
		return nil, err
	}
	d.http = api.New(api.Config{
		Listen:     cfg.HTTP.Listen,
		AdminToken: cfg.HTTP.AdminToken,
		Gatherer:   d.reg,
		Ready: []api.Check{
			{Name: "model", Fn: func() error {
				if len(d.models) == 0 {
					return errors.New("no model loaded")
				}
				return nil
			}},
			{Name: "mqtt", Fn: func() error {
				if !d.pub.Connected() {
					return fmt.Errorf("not connected to %s; results go to the spool", brokerURL)
				}
				if st := d.pub.BreakerState(); st != breaker.Closed {
					return fmt.Errorf("breaker %s: publishes to %s failed too often; results go to the spool", st, brokerURL)
				}
				return nil
			}},
		},
		Status: d.status,
		Log:    log.With("component", "http"),
	})
	d.mountSources()
	for pattern, h := range d.page.Routes() {
		d.http.Handle(pattern, h)
	}
	if err := d.newModels(repo, opts); err != nil {
		return nil, err
	}
	return d, nil
}

// mountSources puts the drivers that take readings over HTTP (httpupload) on the admin
// server at /v1/sources/{name}/upload. Uploads need the admin token unless the source
// has its own, which its driver checks.
func (d *daemon) mountSources() {
	for name, drv := range d.drivers {
		h, ok := drv.(http.Handler)
		if !ok {
			continue
		}
		if own, ok := drv.(interface{ ChecksOwnToken() bool }); !ok || !own.ChecksOwnToken() {
			h = d.http.Admin(h)
		}
		d.http.Handle("/v1/sources/"+name+"/upload", h)
	}
}

// loadModel reads the active version of a model from the repository. The bundled demo
// model is installed on first use, so the demo runs on an empty box.
func loadModel(repo *models.Repository, name string, log *slog.Logger) (*models.Manifest, []byte, error) {
	_, err := repo.ActiveVersion(name)
	switch {
	case errors.Is(err, models.ErrNotFound) && demo.Bundled(name):
		dm, donnx, err := demo.LoadNamed(name)
		if err != nil {
			return nil, nil, err
		}
		if err := repo.Install(dm, donnx); err != nil {
			return nil, nil, fmt.Errorf("install the bundled demo model %q: %w", name, err)
		}
		if err := repo.Activate(dm.Name, dm.Version); err != nil {
			return nil, nil, fmt.Errorf("activate the bundled demo model %q: %w", name, err)
		}
		log.Info("installed a bundled demo model", "model", dm.Name, "version", dm.Version, "dir", repo.Dir())
	case errors.Is(err, models.ErrNotFound):
		return nil, nil, fmt.Errorf("model %q is not in the repository %s: push it, or name a model that is there (bundled demo models: %s)", name, repo.Dir(), strings.Join(demo.Names(), ", "))
	case err != nil:
		return nil, nil, err
	}
	return repo.LoadActive(name)
}

// run starts everything and stops it in order when ctx ends: drivers and pipeline first
// (rings drain), then the publisher (queue flushes, status goes offline), then the broker
// and the HTTP server.
func (d *daemon) run(ctx context.Context) error {
	defer d.close()
	d.started = time.Now()
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBG()
	var wg sync.WaitGroup
	errc := make(chan error, 6+len(d.proxies))
	start := func(name string, fn func(context.Context) error, c context.Context) {
		wg.Go(func() {
			if err := fn(c); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	brokerCtx, stopBroker := context.WithCancel(bg)
	defer stopBroker()
	if d.broker != nil {
		start("embedded mqtt broker", d.broker.Run, brokerCtx)
		select {
		case <-d.broker.Ready():
		case err := <-errc:
			cancelBG()
			wg.Wait()
			return err
		}
	}
	if d.power != nil {
		start("board power", func(c context.Context) error { return d.power.Run(c, 2*time.Second) }, bg)
	}
	httpCtx, stopHTTP := context.WithCancel(bg)
	defer stopHTTP()
	start("http", d.http.Run, httpCtx)
	select {
	case <-d.http.Ready():
	case err := <-errc:
		cancelBG()
		wg.Wait()
		return err
	}
	pubCtx, stopPub := context.WithCancel(bg)
	defer stopPub()
	pubDone := make(chan struct{})
	wg.Go(func() {
		defer close(pubDone)
		if err := d.pub.Run(pubCtx); err != nil {
			errc <- fmt.Errorf("mqtt publisher: %w", err)
		}
	})
	wbCtx, stopWB := context.WithCancel(bg)
	defer stopWB()
	// Write-back and the score alerts sit between the pipeline and the publisher;
	// they stop once the pipeline has drained.
	var sinks sync.WaitGroup
	if d.writeback != nil {
		sinks.Go(func() {
			if err := d.writeback.Run(wbCtx); err != nil {
				errc <- fmt.Errorf("write-back: %w", err)
			}
		})
	}
	if d.scores != nil {
		sinks.Go(func() { _ = d.scores.Run(wbCtx) })
	}
	// The line page's event streams end with it, before the HTTP server waits for its
	// connections to close.
	sinks.Go(func() { _ = d.page.Run(wbCtx) })
	alertCtx, stopAlerts := context.WithCancel(bg)
	defer stopAlerts()
	alertsDone := make(chan struct{})
	wg.Go(func() {
		defer close(alertsDone)
		if d.alerts != nil {
			_ = d.alerts.run(alertCtx)
		}
	})
	// The Modbus guards stop with the line: at shutdown the HMI's connections close
	// before the publisher takes its last messages.
	dpiCtx, stopDPI := context.WithCancel(bg)
	defer stopDPI()
	var dpiWG sync.WaitGroup
	for _, p := range d.proxies {
		dpiWG.Go(func() {
			if err := p.Run(dpiCtx); err != nil {
				errc <- fmt.Errorf("modbus_dpi: %w", err)
			}
		})
	}
	pipeCtx, stopPipe := context.WithCancel(ctx)
	defer stopPipe()
	pipeDone := make(chan struct{})
	wg.Go(func() {
		defer close(pipeDone)
		if err := d.pipe.Run(pipeCtx); err != nil {
			errc <- fmt.Errorf("pipeline: %w", err)
		}
	})
	// Model commands stop before the pipeline, so that no swap is half done when the
	// line stops.
	cmdCtx, stopCmds := context.WithCancel(ctx)
	defer stopCmds()
	cmdsDone := make(chan struct{})
	wg.Go(func() {
		defer close(cmdsDone)
		d.runCommands(cmdCtx)
	})
	d.logStart()
	if d.hup != nil {
		// Reloads stop with the pipeline (a reload during shutdown has nothing left to
		// change) or with the background components on a failure.
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-bg.Done():
					return
				case <-d.hup:
					d.reloadConfig()
				}
			}
		})
	}

	var failure error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "shutdown_timeout", d.cfg.ShutdownTimeout.String())
	case failure = <-errc:
		d.log.Error("component failed; shutting down", "err", failure)
	}
	deadline := time.NewTimer(d.cfg.ShutdownTimeout.Std())
	defer deadline.Stop()
	stopCmds()
	if !waitOr(cmdsDone, deadline.C) {
		return errors.New("shutdown: a model command did not stop within shutdown_timeout")
	}
	stopPipe()
	if !waitOr(pipeDone, deadline.C) {
		return errors.New("shutdown: the pipeline did not stop within shutdown_timeout")
	}
	stopWB()
	sinks.Wait()
	stopDPI()
	dpiWG.Wait()
	stopAlerts()
	<-alertsDone
	stopPub()
	if !waitOr(pubDone, deadline.C) {
		return errors.New("shutdown: the mqtt publisher did not stop within shutdown_timeout")
	}
	cancelBG()
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	if !waitOr(all, deadline.C) {
		return errors.New("shutdown: the http server or broker did not stop within shutdown_timeout")
	}
	close(errc)
	for err := range errc {
		failure = errors.Join(failure, err)
	}
	d.logStop()
	return failure
}

func waitOr(done <-chan struct{}, timeout <-chan time.Time) bool {
	select {
	case <-done:
		return true
	case <-timeout:
		return false
	}
}

func (d *daemon) logStart() {
	info := inference.Describe(d.backend)
	var ms []string
	for name, m := range d.models {
		ms = append(ms, name+"@"+m.Manifest.Version+" sha256:"+m.Manifest.SHA256[:12])
	}
	broker := d.cfg.MQTT.Broker
	if d.broker != nil {
		broker = "embedded mqtt://" + d.broker.Addr()
	}
	d.log.Info("edged started",
		"version", version(),
		"node", d.cfg.Node.Site+"/"+d.cfg.Node.Line+"/"+d.cfg.Node.Name,
		"profile", d.prof.Name,
		"backend", describeBackend(info),
		"threads", fmt.Sprintf("intra=%d inter=%d spinning=%s", d.cfg.Runtime.IntraOpThreads, d.cfg.Runtime.InterOpThreads, d.cfg.Runtime.Spinning),
		"models", strings.Join(ms, ","),
		"broker", broker,
		"http", "http://"+d.http.Addr(),
		"topics", "edged/v1/"+d.cfg.Node.Site+"/"+d.cfg.Node.Line+"/"+d.cfg.Node.Name+"/#",
	)
}

func (d *daemon) logStop() {
	attrs := []any{"uptime", time.Since(d.started).Round(time.Millisecond).String()}
	for _, s := range d.cfg.Sources {
		if c, ok := d.pipe.Counts(s.Name); ok {
			attrs = append(attrs, s.Name, fmt.Sprintf("accepted=%d published=%d dropped_full=%d dropped_stale=%d error=%d dropped_shutdown=%d",
				c.Accepted, c.Published, c.DroppedFull, c.DroppedStale, c.Errors, c.DroppedShutdown))
		}
	}
	st := d.pub.Stats()
	// acked counts results the broker acknowledged straight from memory; spooled, those
	// that went through the spool (delivered from it, now or at the next start).
	attrs = append(attrs, "mqtt", fmt.Sprintf("accepted=%d acked=%d spooled=%d failed=%d", st.Accepted, st.Acked, st.Spooled, st.Failed))
	if d.spool != nil {
		ss := d.spool.Stats()
		attrs = append(attrs, "spool", fmt.Sprintf("records=%d bytes=%d dropped=%d corrupt=%d", ss.Records, ss.Bytes, ss.Dropped, ss.Corrupt))
	}
	d.log.Info("edged stopped", attrs...)
}

// close releases what newDaemon built; safe on a partly built daemon.
func (d *daemon) close() {
	if d.spool != nil {
		if err := d.spool.Close(); err != nil {
			d.log.Error("close the spool", "err", err)
		}
		d.spool = nil
	}
	if d.swaps != nil {
		if err := d.swaps.Close(); err != nil {
			d.log.Warn("close model sessions", "err", err)
		}
		d.swaps = nil
	}
	for _, s := range d.sessions {
		if err := s.Close(); err != nil {
			d.log.Warn("close model session", "err", err)
		}
	}
	d.sessions = nil
	if d.backend != nil {
		if err := d.backend.Close(); err != nil {
			d.log.Warn("close onnx runtime", "err", err)
		}
		d.backend = nil
	}
}

// breakerConfig turns a config file's breaker into the breaker package's.
func breakerConfig(b config.Breaker) breaker.Config {
	return breaker.Config{
		Window:         b.Window.Std(),
		FailureRatio:   b.FailureRatio,
		MinCalls:       uint32(b.MinCalls),
		OpenTimeout:    b.OpenTimeout.Std(),
		HalfOpenProbes: uint32(b.HalfOpenProbes),
	}
}

// inspectionNames are the names of the inspections, which a Sparkplug B birth declares.
func inspectionNames(ins []config.Inspection) []string {
	names := make([]string, len(ins))
	for i := range ins {
		names[i] = ins[i].Name
	}
	return names
}

// describeBackend names the inference backend for the start line: ONNX Runtime with its
// library and why that one, or the pure-Go interpreter.
func describeBackend(info inference.BackendInfo) string {
	if info.Library.Path == "" {
		return info.Name + " (" + info.Version + ")"
	}
	return info.Name + " " + info.Version + " " + info.Library.Path + " (from " + info.Library.From + ")"
}
