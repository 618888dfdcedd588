from bsadvisor.cli import main

main()
