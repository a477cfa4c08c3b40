package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The plant dashboard and the alert rules read edged's metrics by name; these tests keep
// them and the /metrics edged serves from drifting apart, and run promtool over the
// Prometheus files.

const (
	dashboardFile   = "../../deploy/grafana/edged-dashboard.json"
	prometheusDir   = "../../deploy/prometheus"
	rulesFile       = "../../deploy/prometheus/edged-rules.yml"
	dashboardUID    = "edged-plant"
	datasourceUID   = "${datasource}"
	promtoolMissing = "install Debian's prometheus package (make test-setup does)"
)

// promtool is Debian's, from the prometheus package.
func promtool(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/promtool"); err == nil {
		return "/usr/bin/promtool"
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found at /usr/bin/promtool or on PATH: %s", promtoolMissing)
	}
	return p
}

// TestPrometheusFiles runs promtool's checks of the scrape config and the rules, and the
// rules' unit tests (edged-rules.test.yml), which feed series and say which alerts fire.
func TestPrometheusFiles(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "edged-rules.yml"},
		{"test", "rules", "edged-rules.test.yml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = prometheusDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s in %s: %v\n%s", strings.Join(args, " "), prometheusDir, err, out)
		}
	}
}

// grafanaDashboard is the part of a dashboard model the checks read.
type grafanaDashboard struct {
	ID            *int           `json:"id"`
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Type       string          `json:"type"`
			Name       string          `json:"name"`
			Query      json.RawMessage `json:"query"`
			Datasource *grafanaDS      `json:"datasource"`
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string     `json:"name"`
			Datasource *grafanaDS `json:"datasource"`
			Expr       string     `json:"expr"`
			BuiltIn    int        `json:"builtIn"`
		} `json:"list"`
	} `json:"annotations"`
}

type grafanaDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         int        `json:"id"`
	Type       string     `json:"type"`
	Title      string     `json:"title"`
	Datasource *grafanaDS `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Datasource *grafanaDS `json:"datasource"`
		Expr       string     `json:"expr"`
		RefID      string     `json:"refId"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

func readDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard %s: %v", dashboardFile, err)
	}
	return d
}

// panels are the dashboard's panels, those inside collapsed rows included, rows left out.
func (d grafanaDashboard) panels() []grafanaPanel {
	var out []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// exprs are the dashboard's PromQL expressions, each named by where it is.
func (d grafanaDashboard) exprs() map[string]string {
	out := map[string]string{}
	for _, p := range d.panels() {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out[fmt.Sprintf("annotation %q", a.Name)] = a.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct{ Query string }
			if err := json.Unmarshal(v.Query, &obj); err == nil {
				q = obj.Query
			}
		}
		out[fmt.Sprintf("variable %q", v.Name)] = q
	}
	return out
}

// TestDashboardModel checks what makes the dashboard provisionable and usable across a
// plant: a fixed uid and no id, the data source as a variable that every panel and query
// uses, site, line and node variables that every selector of a box's metric honours, and
// a panel for each metric the plant watches.
func TestDashboardModel(t *testing.T) {
	d := readDashboard(t)
	if d.ID != nil {
		t.Errorf("dashboard id %d, want null (Grafana assigns it; a fixed id clashes across instances)", *d.ID)
	}
	if d.UID != dashboardUID {
		t.Errorf("dashboard uid %q, want %q: links and provisioning depend on it", d.UID, dashboardUID)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d, want at least 39 (Grafana 11)", d.SchemaVersion)
	}
	vars := map[string]int{}
	for i, v := range d.Templating.List {
		vars[v.Name] = i
	}
	if i, ok := vars["datasource"]; !ok || d.Templating.List[i].Type != "datasource" || string(d.Templating.List[i].Query) != `"prometheus"` {
		t.Errorf("no datasource variable of type datasource querying prometheus")
	}
	for _, name := range []string{"site", "line", "node"} {
		i, ok := vars[name]
		if !ok {
			t.Errorf("variable %s missing", name)
			continue
		}
		v := d.Templating.List[i]
		if v.Type != "query" || !v.Multi || !v.IncludeAll {
			t.Errorf("variable %s: type %q multi %v includeAll %v, want a multi-select query with All", name, v.Type, v.Multi, v.IncludeAll)
		}
		if v.Datasource == nil || v.Datasource.UID != datasourceUID {
			t.Errorf("variable %s does not query the data source variable", name)
		}
		if !strings.Contains(string(v.Query), "label_values(") {
			t.Errorf("variable %s query %s is not a label_values query", name, v.Query)
		}
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 0 && (a.Datasource == nil || a.Datasource.UID != datasourceUID) {
			t.Errorf("annotation %q does not use the data source variable", a.Name)
		}
	}

	ids := map[int]string{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.panels() {
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Datasource == nil || p.Datasource.UID != datasourceUID {
			t.Errorf("panel %q does not use the data source variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != datasourceUID {
				t.Errorf("panel %q target %s does not use the data source variable", p.Title, tg.RefID)
			}
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap at column %d row %d", other, p.Title, x, y)
				}
				taken[cell{x, y}] = p.Title
			}
		}
	}

	used := map[string]bool{}
	for where, expr := range d.exprs() {
		sels, err := selectors(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s: no metric of edged in %q", where, expr)
		}
		for _, s := range sels {
			used[s.name] = true
			if strings.HasPrefix(where, "variable") {
				continue
			}
			for _, l := range []string{"site", "line", "node"} {
				if !s.has(l, "=~", "$"+l) {
					t.Errorf("%s: %s does not select %s=~\"$%s\", so the %s variable does not filter it", where, s.name, l, l, l)
				}
			}
		}
	}
	// The metrics the plant watches, as the dashboard's issue names them.
	for _, name := range []string{
		"edged_verdicts_total", "edged_frames_total", "edged_ring_occupancy",
		"edged_source_rate_hz", "edged_source_rate_limit_hz",
		"edged_inference_seconds_bucket", "edged_batch_size_sum", "edged_batch_size_count",
		"edged_model_info", "edged_model_swaps_total",
		"edged_mqtt_connected", "edged_mqtt_spool_bytes", "edged_mqtt_spool_oldest_age_seconds",
		"edged_breaker_state", "edged_driver_up", "up",
		"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines", "go_gc_duration_seconds",
	} {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

// promRules is the part of a Prometheus rule file the checks read.
type promRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) promRules {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var r promRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("rules %s: %v", rulesFile, err)
	}
	return r
}

// ruleExprs are the rules' expressions, each named by its alert or record.
func (r promRules) exprs() map[string]string {
	out := map[string]string{}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			out[fmt.Sprintf("rule %s%s", rule.Alert, rule.Record)] = rule.Expr
		}
	}
	return out
}

// TestAlertRulesShape checks each alert the plant relies on is there, with a severity, a
// summary that names the box and a description.
func TestAlertRulesShape(t *testing.T) {
	want := []string{"EdgedDown", "EdgedNoVerdicts", "EdgedNGShareHigh", "EdgedDeadlineMissesRising",
		"EdgedSpoolGrowing", "EdgedModelSwapFailed", "EdgedDriverDown"}
	var got []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			got = append(got, r.Alert)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
			}
			if !strings.Contains(r.Annotations["summary"], "$labels.node") {
				t.Errorf("alert %s: summary %q names no box", r.Alert, r.Annotations["summary"])
			}
			if r.Annotations["description"] == "" {
				t.Errorf("alert %s has no description", r.Alert)
			}
		}
	}
	for _, a := range want {
		if !slices.Contains(got, a) {
			t.Errorf("alert %s missing from %s", a, rulesFile)
		}
	}
}

// TestDashboardAndRulesMetricsExist starts edged on the simulated line, lets results
// flow, and checks every metric the dashboard and the alert rules read is in its
// /metrics, with the label values they select; so renaming a metric or a label value
// fails here rather than leaving an empty panel or an alert that never fires.
func TestDashboardAndRulesMetricsExist(t *testing.T) {
	exprs := readDashboard(t).exprs()
	for where, expr := range readRules(t).exprs() {
		exprs[where] = expr
	}

	l := writeConfig(t, "embedded", "")
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	var m map[string]float64
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m = scrape(t, l.httpAddr)
		if frames(m, "published") >= 50 && m[`edged_verdicts_total{inspection="el",verdict="NG"}`] > 0 &&
			m["edged_inference_seconds_count"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no results flowing within 60s: published %v", frames(m, "published"))
		}
	}
	exposed := parseSamples(t, m)
	if len(exposed) < 20 {
		t.Fatalf("only %d metrics in /metrics", len(exposed))
	}
	for _, msg := range driftErrors(exprs, exposed) {
		t.Error(msg)
	}

	// The check itself catches a renamed metric and a renamed label value.
	for _, c := range []struct{ from, to string }{
		{"edged_ring_occupancy", "edged_ring_fill"},
		{`outcome="published"`, `outcome="done"`},
		{"edged_inference_seconds_bucket", "edged_inference_seconds"},
	} {
		renamed := map[string]string{}
		for where, expr := range exprs {
			renamed[where] = strings.ReplaceAll(expr, c.from, c.to)
		}
		if errs := driftErrors(renamed, exposed); len(errs) == 0 {
			t.Errorf("renaming %s to %s in the dashboard and rules went unnoticed", c.from, c.to)
		}
	}

	if code := p.stop(t, os.Interrupt, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
}

// targetLabels are added by Prometheus per target, never by edged.
var targetLabels = []string{"site", "line", "node", "job", "instance"}

// literalValues matches a label matcher value that is plain text or an alternation of
// plain words ("failed|refused"), whose every value edged should expose.
var literalValues = regexp.MustCompile(`^[A-Za-z0-9_.:-]+(\|[A-Za-z0-9_.:-]+)*$`)

// driftErrors lists what the expressions read that edged's metrics lack: metrics by
// sample name (a histogram is read through its _bucket, _sum and _count series), and
// literal label values of matchers.
func driftErrors(exprs map[string]string, exposed map[string][]map[string]string) []string {
	var errs []string
	for where, expr := range exprs {
		sels, err := selectors(expr)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		for _, s := range sels {
			if s.name == "up" {
				continue // Prometheus's own, per target
			}
			samples, ok := exposed[s.name]
			if !ok {
				errs = append(errs, fmt.Sprintf("%s reads %s, which edged's /metrics does not have", where, s.name))
				continue
			}
			for _, mt := range s.matchers {
				if slices.Contains(targetLabels, mt.label) || !literalValues.MatchString(mt.value) {
					continue
				}
				values := []string{mt.value}
				if strings.HasSuffix(mt.op, "~") {
					values = strings.Split(mt.value, "|")
				}
				for _, v := range values {
					if !slices.ContainsFunc(samples, func(ls map[string]string) bool { return ls[mt.label] == v }) {
						errs = append(errs, fmt.Sprintf("%s reads %s{%s%s%q}, and edged exposes no %s with %s=%q", where, s.name, mt.label, mt.op, mt.value, s.name, mt.label, v))
					}
				}
			}
		}
	}
	sort.Strings(errs)
	return errs
}

// parseSamples turns scrape's name{labels} keys into sample name -> label sets.
func parseSamples(t *testing.T, m map[string]float64) map[string][]map[string]string {
	t.Helper()
	out := map[string][]map[string]string{}
	for key := range m {
		name, rest, _ := strings.Cut(key, "{")
		ls := map[string]string{}
		if rest != "" {
			ms, err := parseMatchers(strings.TrimSuffix(rest, "}"))
			if err != nil {
				t.Fatalf("metrics sample %q: %v", key, err)
			}
			for _, mt := range ms {
				ls[mt.label] = mt.value
			}
		}
		out[name] = append(out[name], ls)
	}
	return out
}

type matcher struct{ label, op, value string }

// selector is one metric selector of an expression: a metric name and its matchers.
type selector struct {
	name     string
	matchers []matcher
}

func (s selector) has(label, op, value string) bool {
	return slices.Contains(s.matchers, matcher{label, op, value})
}

// watched are the metric names the checks follow: edged's, the Go runtime's and the
// process's (both registered by edged), and Prometheus's own up.
var watched = regexp.MustCompile(`^(edged_|go_|process_)[a-zA-Z0-9_:]*$|^up$`)

// selectors finds the selectors of watched metrics in a PromQL expression. It is a
// scanner rather than a PromQL parser: it skips strings, range and subquery brackets and
// the labels of by/without/on/ignoring lists, and reads name{matchers} where a watched
// name stands, which is all the dashboard and the rules write.
func selectors(expr string) ([]selector, error) {
	var out []selector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unclosed [ at %d in %q", i, expr)
			}
			i += j + 1
		case c == '{':
			// A selector without a name ({__name__=...}) is not written here.
			return nil, fmt.Errorf("selector without a metric name at %d in %q", i, expr)
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdentChar(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			var ms []matcher
			if k < len(expr) && expr[k] == '{' {
				end, err := closingBrace(expr, k)
				if err != nil {
					return nil, err
				}
				if ms, err = parseMatchers(expr[k+1 : end]); err != nil {
					return nil, fmt.Errorf("selector %s in %q: %w", word, expr, err)
				}
				j = end + 1
			}
			if watched.MatchString(word) && (k >= len(expr) || expr[k] != '(') {
				out = append(out, selector{name: word, matchers: ms})
			}
			i = j
		default:
			i++
		}
	}
	return out, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// skipString returns the index just past the string literal opening at i.
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if q != '`' {
				j++
			}
		case q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unclosed string at %d in %q", i, s)
}

func closingBrace(s string, open int) (int, error) {
	for j := open + 1; j < len(s); {
		switch s[j] {
		case '"', '\'', '`':
			k, err := skipString(s, j)
			if err != nil {
				return 0, err
			}
			j = k
		case '}':
			return j, nil
		default:
			j++
		}
	}
	return 0, fmt.Errorf("unclosed { at %d in %q", open, s)
}

// parseMatchers reads `label op "value", ...`, the inside of a selector's braces (also
// of an exposition sample's labels, which only use =).
func parseMatchers(s string) ([]matcher, error) {
	var out []matcher
	for i := 0; ; {
		for i < len(s) && (s[i] == ' ' || s[i] == ',' || s[i] == '\n') {
			i++
		}
		if i == len(s) {
			return out, nil
		}
		j := i
		for j < len(s) && isIdentChar(s[j]) {
			j++
		}
		if j == i {
			return nil, fmt.Errorf("label name expected at %d in %q", i, s)
		}
		label := s[i:j]
		for j < len(s) && s[j] == ' ' {
			j++
		}
		k := j
		for k < len(s) && strings.IndexByte("=!~", s[k]) >= 0 {
			k++
		}
		op := s[j:k]
		if !slices.Contains([]string{"=", "!=", "=~", "!~"}, op) {
			return nil, fmt.Errorf("label %s: operator %q", label, op)
		}
		for k < len(s) && s[k] == ' ' {
			k++
		}
		if k == len(s) || s[k] != '"' {
			return nil, fmt.Errorf("label %s: quoted value expected in %q", label, s)
		}
		end, err := skipString(s, k)
		if err != nil {
			return nil, err
		}
		value := s[k+1 : end-1]
		if strings.Contains(value, `\`) {
			if err := json.Unmarshal([]byte(s[k:end]), &value); err != nil {
				return nil, fmt.Errorf("label %s value %s: %w", label, s[k:end], err)
			}
		}
		out = append(out, matcher{label, op, value})
		i = end
	}
}

// TestSelectorsScanner pins the scanner down on the shapes the dashboard and rules use.
func TestSelectorsScanner(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []selector
	}{
		{`sum by (node, le) (rate(edged_inference_seconds_bucket{site=~"$site"}[$__rate_interval]))`,
			[]selector{{"edged_inference_seconds_bucket", []matcher{{"site", "=~", "$site"}}}}},
		{`increase(edged_frames_total{outcome="published"}[10m]) == 0 and on (job, instance, source) edged_driver_up == 1`,
			[]selector{{"edged_frames_total", []matcher{{"outcome", "=", "published"}}}, {"edged_driver_up", nil}}},
		{`label_values(edged_driver_up{site=~"$site", line=~"$line"}, node)`,
			[]selector{{"edged_driver_up", []matcher{{"site", "=~", "$site"}, {"line", "=~", "$line"}}}}},
		{`up{job="edged"} == 0`, []selector{{"up", []matcher{{"job", "=", "edged"}}}}},
		{`edged_model_swaps_total{result=~"failed|refused", name!="a,}b"}`,
			[]selector{{"edged_model_swaps_total", []matcher{{"result", "=~", "failed|refused"}, {"name", "!=", "a,}b"}}}}},
		{`histogram_quantile(0.5, sum by (le) (rate(other_metric_bucket[5m])))`, nil},
	} {
		got, err := selectors(c.expr)
		if err != nil {
			t.Errorf("selectors(%q): %v", c.expr, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("selectors(%q) = %v, want %v", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`edged_x{a="b"`, `edged_x{a="b}`, `{__name__="edged_x"}`, `edged_x{a b}`, `rate(edged_x[5m)`} {
		if _, err := selectors(bad); err == nil {
			t.Errorf("selectors(%q) gave no error", bad)
		}
	}
}

// TestPrometheusScrapesEdged runs Debian's Prometheus with the scrape config and rules of
// deploy/prometheus against a running edged: the relabelling gives each box its site,
// line and node (a target listed without them gets its host as node and "unknown" for
// the rest), every rule evaluates without error, and every query of the dashboard
// evaluates, with data where it selects no subset by a comparison.
func TestPrometheusScrapesEdged(t *testing.T) {
	promtool(t) // the same package; its message says what to install
	bin := "/usr/bin/prometheus"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v: %s", bin, err, promtoolMissing)
	}
	l := writeConfig(t, "embedded", "")
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	_, port, _ := strings.Cut(l.httpAddr, ":")

	// The shipped config, with its example boxes replaced by this one (under two names)
	// and a scrape interval that gives rates within seconds; the relabelling is kept.
	dir := t.TempDir()
	var cfg map[string]any
	b, err := os.ReadFile(prometheusDir + "/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	cfg["rule_files"] = []string{rules}
	job := cfg["scrape_configs"].([]any)[0].(map[string]any)
	job["static_configs"] = []any{map[string]any{"targets": []string{l.httpAddr}, "labels": map[string]string{"site": l.site, "line": l.line, "node": l.node}}}
	job["file_sd_configs"] = []any{map[string]any{"files": []string{filepath.Join(dir, "targets", "*.yml")}, "refresh_interval": "1s"}}
	if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "targets", "bare.yml"), []byte(`- targets: ["localhost:`+port+`"]`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}

	promAddr := freeAddr(t)
	prom := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	var promOut strings.Builder
	prom.Stdout, prom.Stderr = &promOut, &promOut
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- prom.Wait() }()
	t.Cleanup(func() {
		prom.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			prom.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", promOut.String())
		}
	})

	query := func(q string) ([]map[string]string, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return nil, fmt.Errorf("query %q: %w", q, err)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("query %q: %s", q, r.Error)
		}
		out := make([]map[string]string, len(r.Data.Result))
		for i, s := range r.Data.Result {
			out[i] = s.Metric
		}
		return out, nil
	}
	// eventually polls until check passes, or fails the test with its last error.
	eventually := func(what string, check func() error) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			select {
			case err := <-exited:
				t.Fatalf("prometheus exited: %v", err)
			default:
			}
			if err = check(); err == nil {
				return
			}
		}
		t.Fatalf("%s: %v", what, err)
	}

	eventually("both targets scraped with their labels", func() error {
		ups, err := query(`up{job="edged"} == 1`)
		if err != nil {
			return err
		}
		want := map[string]string{
			l.httpAddr:          l.site + "/" + l.line + "/" + l.node,
			"localhost:" + port: "unknown/unknown/localhost",
		}
		got := map[string]string{}
		for _, m := range ups {
			got[m["instance"]] = m["site"] + "/" + m["line"] + "/" + m["node"]
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("up targets %v, want %v", got, want)
		}
		return nil
	})

	all := map[string]string{`$site`: ".*", `$line`: ".*", `$node`: ".*", `$__rate_interval`: "5s", `$__interval`: "5s"}
	exprs := readDashboard(t).exprs()
	eventually("every dashboard query evaluates, with data", func() error {
		var errs []string
		for where, expr := range exprs {
			if strings.HasPrefix(where, "variable") {
				continue // label_values is Grafana's, not PromQL
			}
			q := expr
			for k, v := range all {
				q = strings.ReplaceAll(q, k, v)
			}
			res, err := query(q)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", where, err))
				continue
			}
			filtered := regexp.MustCompile(`[<>=!]=?\s*[0-9]+\s*$`).MatchString(strings.TrimSpace(expr))
			if len(res) == 0 && !filtered {
				errs = append(errs, fmt.Sprintf("%s: no data for %s", where, q))
			}
		}
		if len(errs) > 0 {
			sort.Strings(errs)
			return errors.New(strings.Join(errs, "\n"))
		}
		return nil
	})

	eventually("every rule evaluates without error", func() error {
		resp, err := http.Get("http://" + promAddr + "/api/v1/rules")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name           string `json:"name"`
						Health         string `json:"health"`
						LastError      string `json:"lastError"`
						LastEvaluation string `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return err
		}
		n := 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				n++
				if rule.Health != "ok" {
					return fmt.Errorf("rule %s: health %q %s", rule.Name, rule.Health, rule.LastError)
				}
			}
		}
		if n < 7 {
			return fmt.Errorf("%d rules loaded, want 7", n)
		}
		return nil
	})

	if code := p.stop(t, os.Interrupt, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
}
