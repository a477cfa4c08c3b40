// Package window assembles a source's scalar readings (vibration, temperature, current)
// into fixed windows for a model, and computes the features the model wants from them.
//
// A window is Length consecutive samples of each of the configured channels, taken from
// one source at a nominal RateHz. A new window starts every Hop samples: Hop < Length gives
// overlapping windows (a verdict more often than once a window), Hop == Length disjoint ones.
// For each window the caller takes either the raw samples (Raw: channel-major float32,
// the layout of a [channels, length] tensor) or features per channel (Features: mean, std,
// rms, peak, crest, kurtosis, skewness, and RMS band energies from an FFT), named by
// FeatureNames.
//
// # Gaps
//
// Features of a window are only meaningful if its samples are one continuous stretch of
// signal. A window that held the end of one run and the start of another would show a step
// where the two meet: the step's broadband energy, high peak and kurtosis are exactly what
// a bearing impact looks like, so a restarted machine, a restarted device or a lost
// connection would raise a false alert. So a Windower never mixes two runs in one window.
// It watches each sample's sequence number and capture time:
//
//   - up to MaxGap missing sequence numbers are filled by linear interpolation (a few lost
//     Modbus polls should not cost a whole window); Window().Filled counts them;
//   - more than MaxGap missing restarts, counted as "gap";
//   - a sequence number that does not advance means the source restarted: "restart";
//   - a capture time that goes backwards, or advances by more than (MaxGap+2)/RateHz
//     (one sample more than the longest fillable gap), means the samples are not the
//     continuous stretch their sequence numbers claim: "clock";
//   - a sample missing a channel (or holding NaN or ±Inf for one) cannot be part of a
//     window and leaves nothing to interpolate from: "missing_channel".
//
// A restart drops the samples collected so far; the next window is complete only once the
// new run has Length samples of its own. Resets reports the counts by reason.
//
// A Windower keeps its samples in preallocated rings and allocates nothing per sample, so
// it can sit in front of the pipeline's queue at the full sample rate, and only windows
// enter the queue.
package window
