"""Figures reported in the paper (../shared/paper/aelf-paper.txt), for side-by-side display. Never measured here.

Accuracies in percent; keys as in :func:`aelf.evaluate.evaluate`.
"""

SETS = ("N", "N(L)", "N(R)", "N(U)", "N(D)")


def _rows(table: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        method: {
            "natural": dict(zip(SETS, natural, strict=True)),
            "adversarial": dict(zip(SETS, adversarial, strict=True)),
        }
        for method, (natural, adversarial) in table.items()
    }


# Table 2: CNNb on MNIST, 50 epochs; adversarial test PGD(0.3, 16, 0.02).
TABLE2 = _rows(
    {
        "st": ((99.54, 98.48, 96.91, 94.87, 95.36), (0.0, 0.0, 0.0, 0.0, 0.0)),
        "at": ((99.37, 92.95, 90.33, 64.86, 66.49), (93.36, 68.01, 67.15, 27.08, 29.62)),
        "jt": ((99.38, 92.50, 91.32, 69.10, 65.19), (92.72, 65.32, 68.77, 27.03, 29.97)),
        "aelfs": ((99.29, 95.77, 93.85, 75.33, 77.85), (94.06, 78.48, 76.50, 45.82, 44.65)),
    }
)

# Table 6 (Appendix D): the same with 30 epochs.
TABLE6 = _rows(
    {
        "st": ((99.60, 98.57, 96.07, 94.55, 93.04), (0.0, 0.0, 0.0, 0.0, 0.0)),
        "at": ((99.31, 92.33, 90.87, 60.32, 64.22), (93.35, 67.66, 67.75, 24.43, 30.40)),
        "jt": ((99.29, 92.79, 93.99, 68.28, 67.68), (92.97, 68.80, 72.93, 27.05, 32.67)),
        "aelfs": ((99.27, 95.67, 93.52, 77.18, 80.89), (93.39, 77.19, 74.40, 48.68, 45.12)),
    }
)
