"""Bundled sample models trained on scikit-learn's handwritten digits."""

from .registry import SAMPLES, Sample, list_samples, load_sample, sample_spec, student, weights_path

__all__ = ["SAMPLES", "Sample", "list_samples", "load_sample", "sample_spec", "student", "weights_path"]
