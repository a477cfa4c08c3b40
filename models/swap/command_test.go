package swap_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgedrun/edged/models/swap"
)

func TestParseCommand(t *testing.T) {
	m, _ := build(t, "2", good)
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	push := `{"id":"a1","action":"push","url":"https://models.plant/lin/2?sig=s3cret","manifest":` + string(mb) + `}`
	c, err := swap.ParseCommand([]byte(push))
	if err != nil || c.Action != swap.ActionPush || c.Manifest.Version != "2" || c.ID != "a1" {
		t.Fatalf("push: %+v %v", c, err)
	}
	for _, ok := range []string{
		`{"id":"b","action":"activate","name":"lin","version":"1"}`,
		`{"action":"rollback","name":"lin"}`,
	} {
		if _, err := swap.ParseCommand([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	bad := map[string]string{
		`{"action":"delete","name":"lin"}`:                               `action "delete"`,
		`{"action":"activate","name":"lin"}`:                             `version ""`,
		`{"action":"activate","name":"../x","version":"1"}`:              `"../x"`,
		`{"action":"activate","name":"lin","version":"%2e%2e"}`:          `"%2e%2e"`,
		`{"action":"rollback","name":"lin","version":"1"}`:               "previous version",
		`{"action":"rollback","name":"lin","url":"http://x/"}`:           "for push",
		`{"action":"rollback","name":"lin","extra":1}`:                   "unknown field",
		`{"action":"rollback","name":"lin"} {}`:                          "trailing data",
		`{"action":"push","url":"http://x/m"}`:                           "no manifest",
		`{"action":"push","manifest":{"name":"lin"},"url":"http://x/m"}`: "manifest",
		`not json`: "model command",
		strings.Replace(push, `https://models.plant`, `file:///etc`, 1):                               "not an http or https URL",
		strings.Replace(push, `"id":"a1"`, `"id":"a1","name":"lin"`, 1):                               "come from the manifest",
		strings.Replace(push, `"version":"2"`, `"version":"active"`, 1):                               "reserved",
		strings.Replace(push, `https://models.plant/lin/2?sig=s3cret`, `ftp://u:p@h/x?sig=s3cret`, 1): "not an http",
	}
	for in, want := range bad {
		_, err := swap.ParseCommand([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.80s: error %v, want one with %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the URL's secret: %v", err)
		}
	}
}

// FuzzParseCommand: any bytes give a command that passes its checks or an error, never
// a panic, and a parsed command encodes and parses again to the same action.
func FuzzParseCommand(f *testing.F) {
	m, _ := build(f, "2", good)
	mb, _ := json.Marshal(m)
	f.Add([]byte(`{"id":"a1","action":"push","url":"https://models.plant/lin/2","manifest":` + string(mb) + `}`))
	f.Add([]byte(`{"id":"b","action":"activate","name":"lin","version":"1"}`))
	f.Add([]byte(`{"action":"rollback","name":"lin"}`))
	f.Add([]byte(`{"action":"activate","name":"../x","version":"1"}`))
	f.Add([]byte(`{"action":"push","manifest":null,"url":""}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := swap.ParseCommand(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("encode %+v: %v", c, err)
		}
		c2, err := swap.ParseCommand(again)
		if err != nil {
			t.Fatalf("parsed %q, but not its encoding %q: %v", b, again, err)
		}
		if c2.Action != c.Action || c2.Name != c.Name || c2.Version != c.Version {
			t.Fatalf("round trip %+v -> %+v", c, c2)
		}
	})
}
