"""The worker: a supervisor tree of pykka actors that executes orders (see `actors.supervisor`)."""
