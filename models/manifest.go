// Package models provides model manifests, their ed25519 signatures and the keys that
// make and check them, the verification of a model file against its manifest, and the
// on-disk model repository: crash-safe streamed installs, the active version with its
// history for rollback, pruning, and the audit log of every change.
package models

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// Manifest describes one model version: what it is, how to feed it and how to read it.
type Manifest struct {
	Name        string      `json:"name"`
	Version     string      `json:"version"`
	SHA256      string      `json:"sha256"`
	Size        int64       `json:"size"`
	Inputs      []Tensor    `json:"inputs"`
	Outputs     []Tensor    `json:"outputs"`
	Preprocess  Preprocess  `json:"preprocess"`
	Postprocess Postprocess `json:"postprocess"`
	Created     time.Time   `json:"created"`
	// Description is free text for people (how the model was made, on what data).
	Description string `json:"description,omitempty"`
	// Golden are frames with the output the model must give for them: a pushed model
	// runs them before it serves, so a model that was built or exported wrongly (another
	// normalisation, swapped labels) is caught before it judges a single part.
	Golden []Golden `json:"golden,omitempty"`
	// Signature is the base64 ed25519 signature over Canonical (the manifest with
	// Signature and KeyID empty), by the key KeyID names. A pushed model is taken only
	// when Keyring.Verify finds it signed by a key of models.trusted_keys.
	Signature string `json:"signature,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
}

// Golden is one frame and the output the model must give for it. Input is the
// preprocessed tensor of one frame (the model's per-frame input length) and Output the
// per-frame output; every value must be within Tolerance of the expected one.
type Golden struct {
	Input     []float32 `json:"input"`
	Output    []float32 `json:"output"`
	Tolerance float32   `json:"tolerance"`
}

// Tensor is one model input or output. A dimension of -1 is dynamic (the batch).
type Tensor struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

// Preprocess kinds: what a model's input is made from.
const (
	// PreprocessImage: a camera image, resized and normalised into NCHW.
	PreprocessImage = "image"
	// PreprocessScalars: named values of a reading (Modbus registers, OPC UA tags), one
	// per feature in order, each normalised as (x-mean)/std, into a [batch, features]
	// tensor.
	PreprocessScalars = "scalars"
)

// Preprocess says how a reading becomes the model's input tensor.
type Preprocess struct {
	// Kind is PreprocessImage (the default when empty) or PreprocessScalars.
	Kind string `json:"kind,omitempty"`
	// Features name the scalars a PreprocessScalars model takes, in tensor order.
	Features []string `json:"features,omitempty"`
	// Width and Height the image is resized to.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Layout of the input tensor: "NCHW".
	Layout string `json:"layout"`
	// Color is "gray" (1 channel), "rgb" or "bgr" (3 channels).
	Color string `json:"color"`
	// Pixels are scaled to 0..1, then (x-mean)/std per channel; scalars are taken as
	// they are, then (x-mean)/std per feature.
	Mean []float32 `json:"mean"`
	Std  []float32 `json:"std"`
}

// Postprocess kinds: what a model's output is.
const (
	// PostprocessSoftmax: one logit per label; NG when the defect labels' summed
	// probability reaches the threshold.
	PostprocessSoftmax = "softmax"
	// PostprocessScore: one anomaly score per frame; NG (labels[1]) when it reaches
	// the threshold, else OK (labels[0]). The published score is the raw score.
	PostprocessScore = "score"
)

// Postprocess says how the output becomes a verdict.
type Postprocess struct {
	// Kind is PostprocessSoftmax or PostprocessScore.
	Kind   string   `json:"kind"`
	Labels []string `json:"labels"`
	// OKLabels are the labels that mean a good part; any other label is a defect.
	OKLabels []string `json:"ok_labels"`
	// Threshold is the least defect probability (1 - sum of OK label probabilities)
	// for an NG verdict.
	Threshold float32 `json:"threshold"`
}

// ParseManifest decodes a manifest strictly and checks it is complete.
func ParseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	// More() misses a stray '}' or ']', so ask for a second value and want none.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("parse manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest names everything the runtime needs.
func (m *Manifest) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("manifest: "+format, a...)) }
	if m.Name == "" {
		bad("name is empty")
	}
	if m.Version == "" {
		bad("version is empty")
	}
	if _, err := hex.DecodeString(m.SHA256); len(m.SHA256) != 64 || err != nil {
		bad("sha256 %q is not 64 hex digits", m.SHA256)
	}
	if m.Size <= 0 {
		bad("size %d is not positive", m.Size)
	}
	// The signature covers created in UTC; a year JSON cannot hold could not be signed.
	if y := m.Created.UTC().Year(); y < 0 || y > 9999 {
		bad("created %s is outside the years 0000 to 9999 in UTC", m.Created.Format(time.RFC3339))
	}
	if len(m.Inputs) != 1 {
		bad("inputs: want exactly 1 input, have %d", len(m.Inputs))
	}
	if len(m.Outputs) != 1 {
		bad("outputs: want exactly 1 output, have %d", len(m.Outputs))
	}
	for i, t := range append(append([]Tensor{}, m.Inputs...), m.Outputs...) {
		if t.Name == "" || t.DType != "float32" || len(t.Shape) == 0 {
			bad("tensor %d (%q): want a name, dtype float32 and a shape, have dtype %q shape %v", i, t.Name, t.DType, t.Shape)
		}
	}
	p := m.Preprocess
	switch p.Kind {
	case "", PreprocessImage:
		if len(p.Features) > 0 {
			bad("preprocess.features is for kind %q, not images", PreprocessScalars)
		}
		if p.Width <= 0 || p.Height <= 0 {
			bad("preprocess: width %d and height %d must be positive", p.Width, p.Height)
		}
		if p.Layout != "NCHW" {
			bad("preprocess.layout %q is not supported (NCHW)", p.Layout)
		}
		ch := 0
		switch p.Color {
		case "gray":
			ch = 1
		case "rgb", "bgr":
			ch = 3
		default:
			bad("preprocess.color %q is not one of gray, rgb, bgr", p.Color)
		}
		if ch > 0 && (len(p.Mean) != ch || len(p.Std) != ch) {
			bad("preprocess: mean and std need %d values for color %q, have %d and %d", ch, p.Color, len(p.Mean), len(p.Std))
		}
	case PreprocessScalars:
		if len(p.Features) == 0 {
			bad("preprocess.features is empty: a scalars model names the values it takes")
		}
		seen := map[string]bool{}
		for i, f := range p.Features {
			if f == "" || seen[f] {
				bad("preprocess.features[%d] %q is empty or repeated", i, f)
			}
			seen[f] = true
		}
		if p.Width != 0 || p.Height != 0 || p.Layout != "" || p.Color != "" {
			bad("preprocess: width, height, layout and color are for images, not kind %q", PreprocessScalars)
		}
		if len(p.Mean) != len(p.Features) || len(p.Std) != len(p.Features) {
			bad("preprocess: mean and std need one value per feature (%d), have %d and %d", len(p.Features), len(p.Mean), len(p.Std))
		}
	default:
		bad("preprocess.kind %q is not one of %s, %s", p.Kind, PreprocessImage, PreprocessScalars)
	}
	for i, s := range p.Std {
		if s == 0 {
			bad("preprocess.std[%d] is 0", i)
		}
	}
	q := m.Postprocess
	switch q.Kind {
	case PostprocessSoftmax:
		if q.Threshold <= 0 || q.Threshold >= 1 {
			bad("postprocess.threshold %v is not in (0,1)", q.Threshold)
		}
	case PostprocessScore:
		if len(q.Labels) != 2 || len(q.OKLabels) != 1 || q.OKLabels[0] != q.Labels[0] {
			bad("postprocess: a score model has labels [ok, anomaly] and ok_labels [ok], not %v and %v", q.Labels, q.OKLabels)
		}
		if !(q.Threshold > 0) || math.IsInf(float64(q.Threshold), 0) {
			bad("postprocess.threshold %v is not a positive score", q.Threshold)
		}
		if len(m.Outputs) == 1 && !slices.Equal(m.Outputs[0].Shape, []int64{-1, 1}) {
			bad("outputs[0].shape %v: a score model has one score per frame, [-1, 1]", m.Outputs[0].Shape)
		}
	default:
		bad("postprocess.kind %q is not supported (%s, %s)", q.Kind, PostprocessSoftmax, PostprocessScore)
	}
	if len(q.Labels) < 2 {
		bad("postprocess.labels: want at least 2, have %d", len(q.Labels))
	}
	if len(q.OKLabels) == 0 {
		bad("postprocess.ok_labels is empty")
	}
	for _, ok := range q.OKLabels {
		found := false
		for _, l := range q.Labels {
			found = found || l == ok
		}
		if !found {
			bad("postprocess.ok_labels: %q is not among the labels %v", ok, q.Labels)
		}
	}
	for i, g := range m.Golden {
		if len(g.Input) == 0 || len(g.Output) == 0 {
			bad("golden[%d]: input and output must not be empty, have %d and %d values", i, len(g.Input), len(g.Output))
		}
		if j := nonFinite(g.Input); j >= 0 {
			bad("golden[%d].input[%d] %v is not a finite number", i, j, g.Input[j])
		}
		if j := nonFinite(g.Output); j >= 0 {
			bad("golden[%d].output[%d] %v is not a finite number", i, j, g.Output[j])
		}
		if !(g.Tolerance >= 0) || math.IsInf(float64(g.Tolerance), 0) {
			bad("golden[%d].tolerance %v is not a finite number >= 0", i, g.Tolerance)
		}
	}
	return errors.Join(errs...)
}

// nonFinite is the index of the first NaN or infinite value, or -1.
func nonFinite(v []float32) int {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}
