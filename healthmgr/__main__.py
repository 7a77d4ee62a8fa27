from healthmgr.cli import main

# Guarded: a spawned writer process (healthmgr.manager.flush_process) may import it.
if __name__ == "__main__":
    raise SystemExit(main())
