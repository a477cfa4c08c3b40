package config

import (
	"reflect"
	"testing"
)

func TestWriteValueKeepsTypes(t *testing.T) {
	cfg, err := Parse([]byte(`
sources:
  - {name: cell-cam, type: sim}
inspections:
  - name: el-defect
    source: cell-cam
    model: el-defect
    on_ng:
      - {writer: cell-cam, target: "coil:1", value: true}
      - {writer: cell-cam, target: "holding:2", value: 0x10}
      - {writer: cell-cam, target: "holding:3:float32", value: 2.5}
      - {writer: cell-cam, target: "ns=1;s=Verdict", value: "{part_id}:{verdict}"}
      - {writer: cell-cam, target: "ns=1;s=Code", value: "1"}
    on_ok:
      - {writer: cell-cam, target: "coil:1", value: false}
    on_divert:
      - {writer: cell-cam, target: "holding:2", value: -7}
`))
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Inspections[0]
	var got []any
	for _, a := range append(append(in.OnNG, in.OnOK...), in.OnDivert...) {
		got = append(got, a.Value.V)
	}
	want := []any{true, int64(16), 2.5, "{part_id}:{verdict}", "1", false, int64(-7)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values %#v, want %#v", got, want)
	}
	if in.OnNG[3].Target != "ns=1;s=Verdict" || in.OnNG[0].Writer != "cell-cam" {
		t.Errorf("actions %+v", in.OnNG)
	}
}
