#!/bin/bash
# max-rss.sh PID SECONDS: the largest VmRSS (KiB) of PID seen over SECONDS, sampled every 200 ms.
MAX=0; END=$((SECONDS+$2)); while [ $SECONDS -lt $END ]; do R=$(awk '/VmRSS/{print $2}' /proc/$1/status 2>/dev/null); [ -n "$R" ] && [ $R -gt $MAX ] && MAX=$R; sleep 0.2; done; echo "max_rss_kib=$MAX"
