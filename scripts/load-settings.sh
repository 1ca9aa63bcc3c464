# Sourced by the scripts that put load on a stack from this one machine (make bench,
# make chaos, make cluster-chaos, the stack tests). That load is one client address
# and a few users doing far more than any person would, so:
# - RATE_LIMITS=off: the per-address limits of sign-in and sign-up (auth, make up's
#   nginx) and the per-user rates of listing tickets and placing orders are off; the
#   limits on guessing one account's password stay;
# - MAX_ACTIVE_ORDERS_PER_USER is raised: 20 users run every journey, each holding
#   many unpaid orders at once.
export RATE_LIMITS=off
export MAX_ACTIVE_ORDERS_PER_USER="${MAX_ACTIVE_ORDERS_PER_USER:-1000000}"
echo "load from one machine: RATE_LIMITS=off (per-address and per-user rates off) and MAX_ACTIVE_ORDERS_PER_USER=$MAX_ACTIVE_ORDERS_PER_USER" >&2
