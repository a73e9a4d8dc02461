#!/bin/bash
# usage: idle-memory.sh SERVER_PID URL N — opens N idle connections with `asp bench --idle`
# and prints the server RSS before and while they are open (per connection: the difference / N).
ulimit -n 20000
ASP=${ASP:-target/release/asp}
rss() { awk '/VmRSS/{print $2}' /proc/$1/status; }
SPID=$1; URL=$2; N=$3
B=$(rss $SPID)
$ASP bench "$URL" --idle $N --hold 6 --connections 0 > /tmp/idle_out.txt 2>/tmp/idle_err.txt &
CP=$!
for i in $(seq 1 600); do grep -q 'idle connections open' /tmp/idle_err.txt && break; sleep 0.2; done
sleep 2
A=$(rss $SPID)
echo "baseline_kib=$B with_${N}_idle_kib=$A per_conn_kib=$(( (A-B)/N ))"
cat /tmp/idle_err.txt | head -3
wait $CP
