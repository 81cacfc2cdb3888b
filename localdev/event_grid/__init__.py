"""A local Event Grid: BlobCreated events for the `input` container, delivered to `uploads`.

In Azure the storage account's system topic raises `Microsoft.Storage.BlobCreated` for
every write and the subscription in infra/app/eventsubscription.bicep delivers those for
`input/**.csv` to the `uploads` queue. Azurite raises no events, so the local stack runs
this in their place: it polls the container and sends, for each new or overwritten blob,
the event the subscription would deliver, encoded as Event Grid encodes it.

    subscription.py  the subscription's filter and destination (checked against the Bicep)
    events.py        the BlobCreated event and its queue message (the one builder)
    watcher.py       one poll: list, compare with what was seen, send, remember
    main.py          the process the stack starts (`python -m localdev.event_grid`)
"""
