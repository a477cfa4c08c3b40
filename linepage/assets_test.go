package linepage

import (
	"encoding/xml"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
)

// elements parses HTML loosely (the page is simple, well-formed markup) and returns
// each element's attributes by id.
func elements(t *testing.T, page string) map[string]map[string]string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	byID := make(map[string]map[string]string)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return byID
		}
		if err != nil {
			t.Fatalf("parse index.html: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attrs := map[string]string{"<tag>": se.Name.Local}
		for _, a := range se.Attr {
			attrs[a.Name.Local] = a.Value
		}
		if id := attrs["id"]; id != "" {
			if _, dup := byID[id]; dup {
				t.Fatalf("id %q appears twice", id)
			}
			byID[id] = attrs
		}
	}
}

func TestPageCarriesTheDOMContract(t *testing.T) {
	r := newRig(t, Config{Title: `plant<1>/line3/box7`})
	resp, body := get(t, r, "/")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("no CSP keeping the page on the box: %q", resp.Header.Get("Content-Security-Policy"))
	}
	page := string(body)
	if !strings.Contains(page, "<title>plant&lt;1&gt;/line3/box7") {
		t.Fatalf("title not filled in (and escaped): %s", page[:200])
	}
	els := elements(t, page)
	for id, tag := range map[string]string{
		"conn": "div", "banner": "div", "verdicts": "ol", "ng-images": "div",
		"counters": "tbody", "models": "ul", "sources": "ul",
	} {
		a, ok := els[id]
		if !ok {
			t.Fatalf("index.html has no #%s", id)
		}
		if a["<tag>"] != tag {
			t.Fatalf("#%s is a %s, want %s", id, a["<tag>"], tag)
		}
	}
	if _, hidden := els["banner"]["hidden"]; !hidden {
		t.Fatal("#banner is not hidden until there is something to say")
	}
	if els["conn"]["data-state"] != "down" {
		t.Fatalf("#conn starts %q, want down", els["conn"]["data-state"])
	}

	// The script renders what the browser test and the technician rely on.
	_, js := get(t, r, "/line/line.js")
	for _, want := range []string{
		`new EventSource("/v1/events")`, `"snapshot"`, `"result"`, `"status"`,
		`el("li", "result")`, `dataset.verdict`, `dataset.seq`, `dataset.inspection`,
		`el("figure", "ng")`, `"/v1/line/images/"`, `el("figcaption")`,
		`"ok", "ng", "unknown", "ng-share"`, `dataset.model`, `el("span", "version"`,
		`el("ul", "swaps")`, `dataset.source`, `dataset.up`, `last_fault`,
		`banner.hidden`, `banner.dataset.kind`, `"broker"`, `"breaker"`,
		`conn.dataset.state`, `"live"`, `"down"`, `MAX_RESULTS = 50`,
	} {
		if !strings.Contains(string(js), want) {
			t.Errorf("line.js lacks %s", want)
		}
	}
}

func TestAssetsServedOfflineWithTypes(t *testing.T) {
	r := newRig(t, Config{})
	for path, ct := range map[string]string{
		"/line/line.css":    "text/css; charset=utf-8",
		"/line/line.js":     "text/javascript; charset=utf-8",
		"/line/index.html":  "text/html; charset=utf-8",
		"/line/favicon.svg": "image/svg+xml",
	} {
		resp, body := get(t, r, path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ct || len(body) == 0 {
			t.Fatalf("%s: %s %q (%d bytes), want %q", path, resp.Status, resp.Header.Get("Content-Type"), len(body), ct)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("ETag") == "" {
			t.Fatalf("%s headers %v", path, resp.Header)
		}
		req, _ := http.NewRequest("GET", r.srv.URL+path, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		again, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		again.Body.Close()
		if again.StatusCode != http.StatusNotModified {
			t.Fatalf("%s revalidation: %s, want 304", path, again.Status)
		}
	}
	for _, path := range []string{"/line/nothing.js", "/nothing", "/line/"} {
		if resp, _ := get(t, r, path); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %s, want 404", path, resp.Status)
		}
	}
	// Works offline: nothing the page loads comes from another host.
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(name)
		if err != nil {
			return err
		}
		// An SVG names its XML namespace with a URL that nothing fetches.
		b = []byte(strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, ""))
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s refers to %q: the page must work without the internet", name, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
