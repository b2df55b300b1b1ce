"""Figures reported in the paper (../shared/paper/aelf-paper.txt), for side-by-side display. Never measured here.

Accuracies in percent; keys as in :func:`aelf.workflows.evaluation.evaluate.evaluate`.
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


def _robust_rows(columns: tuple[str, ...], table: dict[str, tuple[float, ...]]) -> dict[str, dict[str, float]]:
    return {key: dict(zip(columns, values, strict=True)) for key, values in table.items()}


# Table 3: CNNb on CIFAR-10, trained with PGD(0.031, 5, 0.01); tested with A*(5) = PGD(0.031, 5, 0.01) and
# A*(10) = PGD(0.031, 10, 0.005). Keys are the run keys of `aelf reproduce table3`. The left half's three JT rows
# carry no ratio in the paper; we read them as 0.4:0.6, 0.5:0.5, 0.6:0.4 (the order of the right half, and natural
# accuracy rises down the rows as the natural weight does). "TR lambda^-1 = b" is TRADES with beta = b.
TABLE3 = _robust_rows(
    ("natural", "A*(5)", "A*(10)"),
    {
        "st": (92.08, 0.0, 0.0),
        "at": (81.16, 42.07, 41.39),
        "jt-0.4-0.6": (83.27, 40.26, 39.60),
        "jt-0.5-0.5": (84.38, 38.77, 38.01),
        "jt-0.6-0.4": (84.85, 37.86, 37.14),
        "trades-1": (83.04, 40.28, 39.66),
        "trades-2": (81.18, 43.98, 43.55),
        "trades-3": (79.14, 44.93, 44.63),
        "jt_star-0.4-0.6": (83.63, 43.60, 42.99),
        "jt_star-0.5-0.5": (84.63, 42.08, 41.35),
        "jt_star-0.6-0.4": (86.10, 40.37, 39.63),
        "aelfs-0.4-0.6": (83.77, 45.90, 45.45),
        "aelfs-0.5-0.5": (85.77, 43.85, 43.25),
        "aelfs-0.6-0.4": (86.75, 40.90, 40.07),
    },
)

# Table 4: WRN-40 (dropout 0.2) on CIFAR-10, PGD(0.031, 10, 0.0062) without / with a random start. The paper copies
# AT and TRADES from Madry et al. 2018 and Yang et al. 2020 (the latter: TR lambda^-1 = 6 -> 84.46 / 48.58).
TABLE4 = _robust_rows(
    ("natural", "A*", "A*(random start)"),
    {
        "st": (95.33, 0.11, 0.10),
        "st_leaky": (95.71, 0.16, 0.15),
        "aelfs": (90.42, 55.39, 55.46),
        "aelfs_leaky": (90.04, 56.86, 56.80),
    },
)

# Table 5: WRN-28 on CIFAR-100, PGD(0.03, 7, 0.0075). AT and TRADES rows of the paper are copied from other work
# (WRN-32), so only the paper's own runs are listed.
TABLE5 = _robust_rows(
    ("natural", "A*"),
    {
        "st": (80.27, 0.14),
        "st_leaky": (80.20, 0.11),
        "aelfs": (65.08, 26.69),
        "aelfs_leaky": (65.17, 27.11),
    },
)
