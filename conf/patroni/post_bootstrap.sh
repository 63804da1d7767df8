#!/bin/sh
# Run once by Patroni on the first primary (its connection URL is $1): the application's
# database. The instances connect as the superuser named in NURSERY_DATABASE_URL.
set -e
psql -v ON_ERROR_STOP=1 "$1" -c "CREATE DATABASE nursery"
