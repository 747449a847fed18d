# Prototype-substitution recipes of the deeprelax-bulk training set (sourced by generate.sh).
# One output folder per recipe; every folder resumes (pair k of a folder uses the seed (seed, k)).
# name | relax-pairs key=value arguments (cell + positions, FrechetCellFilter + FIRE to 0.05 eV/A)
P=datasets/bulk_chgnet/prototypes
A="Sr:Ca,Sr,Ba,La,K,Na"
B="Ti:Ti,Zr,Hf,Sn,Mn,Fe,Co,Ni,Nb,Cr,V,Ta,Ge"
RECIPES=(
  "perovskite_lo|prototypes=[SrTiO3:perovskite:3.9] supercells=[[1,1,1],[2,1,1],[1,1,2]] 'sublattices=[\"$A\",\"$B\"]' strain=0.03 rattle=0.05 seed=201"
  "perovskite_hi|prototypes=[SrTiO3:perovskite:3.9] supercells=[[1,1,1],[2,1,1],[1,2,1]] 'sublattices=[\"$A\",\"$B\"]' strain=0.06 rattle=0.1 seed=202"
  "double_perovskite|prototypes=[SrTiO3:perovskite:3.9] supercells=[[2,1,1],[1,1,2],[2,2,1]] 'sublattices=[\"$A\",\"$B/2\"]' strain=0.04 rattle=0.08 seed=203"
  "rocksalt|prototypes=[MgO:rocksalt:4.21,$P/MgO_rocksalt_prim.cif] supercells=[[1,1,1],[2,1,1],[1,2,2]] 'sublattices=[\"Mg:Mg,Ca,Sr,Ba,Ni,Co,Fe,Mn,Zn,Cd\",\"O:O,S\"]' strain=0.05 rattle=0.08 seed=204"
  "fluorite|prototypes=[CeO2:fluorite:5.41,$P/CeO2_fluorite_prim.cif] supercells=[[1,1,1],[2,1,1]] 'sublattices=[\"Ce:Ce,Zr,Hf,Th,U,Pr\"]' strain=0.04 rattle=0.06 seed=205"
  "zincblende|prototypes=[ZnS:zincblende:5.41,$P/ZnS_zincblende_prim.cif] supercells=[[1,1,1],[2,1,1]] 'sublattices=[\"Zn:Zn,Cd,Be,Mg\",\"S:S,Se,Te,O\"]' strain=0.05 rattle=0.08 seed=206"
  "wurtzite|prototypes=[ZnO:wurtzite:3.25] supercells=[[1,1,1],[2,1,1],[2,2,1],[1,1,2]] 'sublattices=[\"Zn:Zn,Mg,Cd,Be\",\"O:O,S,Se\"]' strain=0.05 rattle=0.08 seed=207"
  "rutile|prototypes=[$P/TiO2_rutile.cif] supercells=[[1,1,1],[1,1,2],[2,1,1]] 'sublattices=[\"Ti:Ti,Sn,Ge,Ru,Ir,Mn,Cr,V,Nb,Pb\"]' strain=0.05 rattle=0.08 seed=208"
  "spinel|prototypes=[$P/MgAl2O4_spinel_prim.cif] supercells=[[1,1,1]] 'sublattices=[\"Mg:Mg,Zn,Fe,Co,Ni,Mn,Cd\",\"Al:Al,Cr,Fe,Ga,Mn,V,Co\"]' strain=0.04 rattle=0.06 seed=209"
  "layered|prototypes=[$P/LiCoO2_layered_hex.cif] supercells=[[1,1,1]] 'sublattices=[\"Li:Li,Na\",\"Co:Co,Ni,Mn,Cr,Fe,Al,V\"]' strain=0.04 rattle=0.06 seed=210"
)
# the same prototypes strained and rattled harder (a second level, as perovskite_hi is for perovskite_lo)
RECIPES_HI=(
  "double_perovskite_hi|prototypes=[SrTiO3:perovskite:3.9] supercells=[[2,1,1],[1,1,2],[2,2,1]] 'sublattices=[\"$A\",\"$B/2\"]' strain=0.07 rattle=0.12 seed=303"
  "rocksalt_hi|prototypes=[MgO:rocksalt:4.21,$P/MgO_rocksalt_prim.cif] supercells=[[1,1,1],[2,1,1],[1,2,2]] 'sublattices=[\"Mg:Mg,Ca,Sr,Ba,Ni,Co,Fe,Mn,Zn,Cd\",\"O:O,S\"]' strain=0.08 rattle=0.12 seed=304"
  "fluorite_hi|prototypes=[CeO2:fluorite:5.41,$P/CeO2_fluorite_prim.cif] supercells=[[1,1,1],[2,1,1]] 'sublattices=[\"Ce:Ce,Zr,Hf,Th,U,Pr\"]' strain=0.07 rattle=0.1 seed=305"
  "zincblende_hi|prototypes=[ZnS:zincblende:5.41,$P/ZnS_zincblende_prim.cif] supercells=[[1,1,1],[2,1,1]] 'sublattices=[\"Zn:Zn,Cd,Be,Mg\",\"S:S,Se,Te,O\"]' strain=0.08 rattle=0.12 seed=306"
  "wurtzite_hi|prototypes=[ZnO:wurtzite:3.25] supercells=[[1,1,1],[2,1,1],[2,2,1],[1,1,2]] 'sublattices=[\"Zn:Zn,Mg,Cd,Be\",\"O:O,S,Se\"]' strain=0.08 rattle=0.12 seed=307"
  "rutile_hi|prototypes=[$P/TiO2_rutile.cif] supercells=[[1,1,1],[1,1,2],[2,1,1]] 'sublattices=[\"Ti:Ti,Sn,Ge,Ru,Ir,Mn,Cr,V,Nb,Pb\"]' strain=0.08 rattle=0.12 seed=308"
  "spinel_hi|prototypes=[$P/MgAl2O4_spinel_prim.cif] supercells=[[1,1,1]] 'sublattices=[\"Mg:Mg,Zn,Fe,Co,Ni,Mn,Cd\",\"Al:Al,Cr,Fe,Ga,Mn,V,Co\"]' strain=0.07 rattle=0.1 seed=309"
  "layered_hi|prototypes=[$P/LiCoO2_layered_hex.cif] supercells=[[1,1,1]] 'sublattices=[\"Li:Li,Na\",\"Co:Co,Ni,Mn,Cr,Fe,Al,V\"]' strain=0.07 rattle=0.1 seed=310"
)
COMMON="oracle=chgnet relax_cell=true cell_filter=frechet optimizer=fire fmax=0.05 max_steps=300"
