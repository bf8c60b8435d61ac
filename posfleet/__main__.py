from posfleet.cli import main

main()
