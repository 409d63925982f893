"""The ``lpot`` subcommands: one module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

The command line (:mod:`lpot_ir.cli`) lists them, in order, in :data:`lpot_ir.cli.COMMANDS`.
"""
