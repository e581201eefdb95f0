from tpsload.cli import main

main()
