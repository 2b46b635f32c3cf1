"""The operator commands, one module each with a ``main(argv) -> exit status``.

``run`` (the agent, the default), ``demo``, ``check_config``, ``qshape``, ``analyze``,
``dead_letters``, ``status`` and ``blocklists``; ``flags`` holds the flags they share,
``agent_client`` how ``status`` and ``dead_letters`` ask a running agent, and ``exporter/render.py``
the table and time formatting.
"""
