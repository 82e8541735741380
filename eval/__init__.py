"""Offline evaluation: ranking metrics, temporal leave-one-out recommendation baselines, cross-modal
retrieval, explanation quality, a simulated A/B test, and MLflow-logged ablations.

Entry points: `whyrec eval rec|retrieval|explain|ab DATA` and `whyrec ablate CONFIG` (eval/cli.py);
the same calls from Python through `eval.runner.EVALUATIONS` and `eval.ablate.run_ablation`.
"""
