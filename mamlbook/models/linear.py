"""The smallest models: a line and a logistic regression, the seed article's examples."""

from __future__ import annotations

from torch import Tensor, nn


class LinearModel(nn.Module):
    """y = w x + b, elementwise for one input feature or a dot product for several.

    With one input and output this is the two-parameter model whose meta-learning can be drawn
    in the plane (w, b). Input `[N, in_features]`, output `[N, out_features]`.
    """

    def __init__(self, in_features: int = 1, out_features: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class LogisticRegression(LinearModel):
    """A linear model read as one logit per example: p(y=1 | x) = sigmoid(w . x + b).

    It returns logits, not probabilities, so the loss (`"bce"`) stays numerically stable.
    """

    def __init__(self, in_features: int = 2) -> None:
        super().__init__(in_features, 1)
