package inference

import (
	"fmt"
	"math"

	"github.com/edgedrun/edged/models"
)

// Verdicts a frame can get.
const (
	VerdictOK      = "OK"
	VerdictNG      = "NG"
	VerdictUnknown = "UNKNOWN"
)

// Verdict is what the model said about one frame.
type Verdict struct {
	Verdict string
	// Label is the most likely defect label for NG, the most likely OK label for OK.
	Label string
	// Score is the probability of the verdict: the summed defect probabilities for NG,
	// the summed OK probabilities for OK.
	Score float32
	// Scores are the per-label probabilities, in the order of Postprocessor.Labels.
	Scores []float32
}

// Postprocessor turns a softmax model's logits into a verdict.
type Postprocessor struct {
	labels    []string
	ok        []bool
	threshold float32
}

// NewPostprocessor builds a Postprocessor; threshold 0 keeps the manifest's.
func NewPostprocessor(p models.Postprocess, threshold float32) (*Postprocessor, error) {
	if p.Kind != "softmax" {
		return nil, fmt.Errorf("postprocess: kind %q is not supported (softmax)", p.Kind)
	}
	if threshold == 0 {
		threshold = p.Threshold
	}
	if threshold <= 0 || threshold >= 1 {
		return nil, fmt.Errorf("postprocess: threshold %v is not in (0,1)", threshold)
	}
	pp := &Postprocessor{labels: p.Labels, ok: make([]bool, len(p.Labels)), threshold: threshold}
	anyOK := false
	for i, l := range p.Labels {
		for _, o := range p.OKLabels {
			if l == o {
				pp.ok[i], anyOK = true, true
			}
		}
	}
	if !anyOK || len(p.Labels) < 2 {
		return nil, fmt.Errorf("postprocess: labels %v need at least one of ok_labels %v and one defect", p.Labels, p.OKLabels)
	}
	return pp, nil
}

// Labels are the model's labels in output order.
func (pp *Postprocessor) Labels() []string { return pp.labels }

// Threshold is the least defect probability for NG.
func (pp *Postprocessor) Threshold() float32 { return pp.threshold }

// Apply writes the verdict for one frame's logits into v, reusing v.Scores.
func (pp *Postprocessor) Apply(logits []float32, v *Verdict) error {
	if len(logits) != len(pp.labels) {
		return fmt.Errorf("postprocess: model gave %d values for %d labels", len(logits), len(pp.labels))
	}
	if cap(v.Scores) < len(logits) {
		v.Scores = make([]float32, len(logits))
	}
	v.Scores = v.Scores[:len(logits)]
	maxL := logits[0]
	for _, x := range logits[1:] {
		maxL = max(maxL, x)
	}
	var sum float64
	for i, x := range logits {
		e := math.Exp(float64(x - maxL))
		v.Scores[i] = float32(e)
		sum += e
	}
	if sum == 0 || math.IsNaN(sum) || math.IsInf(sum, 0) {
		return fmt.Errorf("postprocess: model gave non-finite logits %v", logits)
	}
	var pNG float32
	bestOK, bestNG := -1, -1
	for i := range v.Scores {
		v.Scores[i] = float32(float64(v.Scores[i]) / sum)
		if pp.ok[i] {
			if bestOK < 0 || v.Scores[i] > v.Scores[bestOK] {
				bestOK = i
			}
		} else {
			pNG += v.Scores[i]
			if bestNG < 0 || v.Scores[i] > v.Scores[bestNG] {
				bestNG = i
			}
		}
	}
	if pNG >= pp.threshold {
		v.Verdict, v.Label, v.Score = VerdictNG, pp.labels[bestNG], pNG
	} else {
		v.Verdict, v.Label, v.Score = VerdictOK, pp.labels[bestOK], 1-pNG
	}
	return nil
}
