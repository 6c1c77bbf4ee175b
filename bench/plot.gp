# The ratio chart of bench/RESULTS.md (bench/run.sh draws it after the run):
#
#   gnuplot -e "data='RESULTS.dat'; out='RESULTS.png'; subtitle='full run, 2026-11-27'" bench/plot.gp
#
# `data` is what `bench_system run --out FILE.md` writes to FILE.dat: one line per measure with a
# target, "label" countersign/baseline bare-sidecar/raw target ("-" where no sidecar ran).
if (!exists("data")) data = "RESULTS.dat"
if (!exists("out")) out = "RESULTS.png"
if (!exists("subtitle")) subtitle = ""

# pngcairo draws smoother; plain png (libgd) is the fallback.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1500,600 font "sans,10"
} else {
  set terminal png size 1500,600
}
set output out

set datafile missing "-"
set title "countersign against its baselines: ratios with a target" . (subtitle ne "" ? "\n" . subtitle : "")
set ylabel "ratio (1.0 = as fast as the baseline)"
set yrange [0:*]
set offsets 0.5, 0.5, 0.25, 0
set grid ytics lc rgb "#dddddd"
set xtics nomirror scale 0 rotate by -25 font ",9"
set ytics nomirror
set border 3
set key top right box opaque
set style fill solid 0.85 border -1
# Value labels on a white box: readable where they meet the target line.
set style textbox opaque noborder margins 1, 1

width = 0.32
shift = 0.17
plot data using ($0 - shift):3:(width) with boxes lc rgb "#a0a0a0" \
       title "bare cnats sidecar / raw NATS (the cost of the sidecar position)", \
     data using ($0 + shift):2:(width) with boxes lc rgb "#1f6fb4" \
       title "countersign / baseline (named under each bar; hold, approve: raw NATS; scale: largest / smallest bucket)", \
     data using 0:4:(0.45):xtic(1) with xerrorbars pt -1 lw 3 lc rgb "#d62728" \
       title "target", \
     data using ($0 - shift):3:(sprintf("%.2fx", $3)) with labels boxed offset 0, 0.8 notitle, \
     data using ($0 + shift):2:(sprintf("%.2fx", $2)) with labels boxed offset 0, 0.8 notitle
