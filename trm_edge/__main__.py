from trm_edge.cli import main

main()
