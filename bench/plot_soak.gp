# The soak chart of bench/SOAK.md (bench/run.sh --soak draws it): countersign's RSS and the
# pending approvals over the run.
#
#   gnuplot -e "data='SOAK.soak.dat'; out='SOAK.png'; subtitle='soak run'" bench/plot_soak.gp
#
# `data` is what `bench_system run --only soak --out FILE.md` writes to FILE.soak.dat:
# seconds, RSS in MiB, pending approvals.
if (!exists("data")) data = "SOAK.soak.dat"
if (!exists("out")) out = "SOAK.png"
if (!exists("subtitle")) subtitle = ""

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1100,480 font "sans,10"
} else {
  set terminal png size 1100,480
}
set output out
set title "countersign RSS under a mixed load (80% allowed, 20% held and approved)" . (subtitle ne "" ? "\n" . subtitle : "")
set xlabel "seconds"
set ylabel "RSS (MiB)"
set y2label "pending approvals"
set yrange [0:*]
set y2range [0:*]
set ytics nomirror
set y2tics
set grid ytics lc rgb "#dddddd"
set key top left box opaque
plot data using 1:2 with lines lw 2 lc rgb "#1f6fb4" title "RSS", \
     data using 1:3 axes x1y2 with lines lw 1 lc rgb "#ff7f0e" title "pending approvals"
