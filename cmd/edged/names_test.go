package main

import (
	"slices"
	"testing"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/pipeline"
)

// TestConfigAndPipelineAgreeOnNames: the config validates the backpressure policies
// and fail-safe actions that the pipeline then has to take; the two lists live apart so
// that the pipeline does not depend on the config file's package, and this keeps them
// equal.
func TestConfigAndPipelineAgreeOnNames(t *testing.T) {
	if !slices.Equal(config.Backpressures, pipeline.Policies) {
		t.Errorf("backpressure: config %v, pipeline %v", config.Backpressures, pipeline.Policies)
	}
	if !slices.Equal(config.FailSafes, pipeline.FailSafes) {
		t.Errorf("fail-safe: config %v, pipeline %v", config.FailSafes, pipeline.FailSafes)
	}
}
