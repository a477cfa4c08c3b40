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

// Postprocessor turns a model's output into a verdict: a softmax model's logits, or a
// score model's single anomaly score.
type Postprocessor struct {
	labels    []string
	ok        []bool
	threshold float32
	// score is set for kind "score": the output is one anomaly score, NG at or above
	// the threshold; okLabel and ngLabel name the two verdicts.
	score            bool
	okLabel, ngLabel string
}

// NewPostprocessor builds a Postprocessor; threshold 0 keeps the manifest's.
func NewPostprocessor(p models.Postprocess, threshold float32) (*Postprocessor, error) {
	if threshold == 0 {
		threshold = p.Threshold
	}
	switch p.Kind {
	case models.PostprocessScore:
		if !(threshold > 0) || math.IsInf(float64(threshold), 0) {
			return nil, fmt.Errorf("postprocess: threshold %v is not a positive score", threshold)
		}
		if len(p.Labels) != 2 || len(p.OKLabels) != 1 || p.OKLabels[0] != p.Labels[0] {
			return nil, fmt.Errorf("postprocess: a score model has labels [ok, anomaly] with ok_labels [ok], not %v and %v", p.Labels, p.OKLabels)
		}
		// The scores map of a result holds the anomaly score under the anomaly label.
		return &Postprocessor{labels: p.Labels[1:], threshold: threshold, score: true, okLabel: p.Labels[0], ngLabel: p.Labels[1]}, nil
	case models.PostprocessSoftmax:
	default:
		return nil, fmt.Errorf("postprocess: kind %q is not one of %s, %s", p.Kind, models.PostprocessSoftmax, models.PostprocessScore)
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

// Threshold is the least defect probability (or anomaly score) for NG.
func (pp *Postprocessor) Threshold() float32 { return pp.threshold }

// Apply writes the verdict for one frame's output into v, reusing v.Scores.
func (pp *Postprocessor) Apply(logits []float32, v *Verdict) error {
	if pp.score {
		if len(logits) != 1 {
			return fmt.Errorf("postprocess: score model gave %d values, want 1", len(logits))
		}
		x := logits[0]
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("postprocess: model gave a non-finite score %v", x)
		}
		v.Scores = append(v.Scores[:0], x)
		if x >= pp.threshold {
			v.Verdict, v.Label = VerdictNG, pp.ngLabel
		} else {
			v.Verdict, v.Label = VerdictOK, pp.okLabel
		}
		v.Score = x
		return nil
	}
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
