"""What a person looks at: every matplotlib figure (plots), photos with their faces boxed
and labelled and contact sheets (annotate, Pillow only), and the self-contained HTML pages
(report). Takes numbers and images, never a model.

May import: core.
"""
