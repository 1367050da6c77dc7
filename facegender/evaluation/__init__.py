"""Measuring a model: metrics on arrays (metrics), the share of women corrected for the
classifier's errors (quantify), the numbers and figures of the ROC, precision-recall and
reliability curves (curves), Grad-CAM and the worst mistakes (gradcam), and the evaluation of a
model on labelled folders that test_script.py runs from an EvalConfig (evaluate, config), with
the tables per attribute value (factors) and its result as text (summary).

May import: core, data, drawing, model, runtime.
"""
