"""Media plane of Switchboard: Realtime client, peers, rooms, bridge, audio, local SFU.

Nothing under this package imports discord.
"""
