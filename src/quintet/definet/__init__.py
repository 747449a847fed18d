"""DefiNet: one-shot relaxed geometries of point-defect supercells (vacancies, substitutions)."""
