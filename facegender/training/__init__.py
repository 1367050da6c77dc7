"""Training a model from a TrainConfig (config): the run from data plan to saved model
(run), what it returns and the text of it (result), the two cheap stages on cached backbone
features (stages, features) and what happens at the end of every epoch: validation scores,
history, checkpoints (callbacks).

May import: core, faces, data, model, runtime, drawing, evaluation.
"""
