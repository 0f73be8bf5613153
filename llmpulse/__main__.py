from llmpulse.cli.main import main

main()
