"""Studies on a finished run: the rank check, the random baseline (Table 5) and the comparison search (Fig. 2)."""
