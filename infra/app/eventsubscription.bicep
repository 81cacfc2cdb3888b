// BlobCreated for input/**/*.csv -> the uploads queue, delivered with the system topic's
// own identity (Storage Queue Data Message Sender on that queue): no webhook, no key, no
// script. An event Event Grid cannot deliver within its retry policy is written, with the
// same identity (Storage Blob Data Contributor on that container), to the dead-letter
// container instead of being dropped.

param systemTopicName string

param storageAccountName string

@description('Container users upload CSV files to.')
param inputContainerName string

@description('Queue the ingest function listens on.')
param queueName string

@description('Container undeliverable events are written to (a blob per event batch).')
param deadLetterContainerName string

@description('Seconds an undelivered event message stays in the queue (-1: forever).')
param queueMessageTimeToLiveInSeconds int = 604800

resource storage 'Microsoft.Storage/storageAccounts@2026-09-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource blobCreatedToQueue 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'csv-uploads'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storage.id
          queueName: queueName
          queueMessageTimeToLiveInSeconds: queueMessageTimeToLiveInSeconds
        }
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${inputContainerName}/'
      subjectEndsWith: '.csv'
      isSubjectCaseSensitive: false
      // Only calls that commit a blob's content. This leaves out, for example, the Data
      // Lake CreateFile call that raises BlobCreated for an empty file before its
      // content arrives with FlushWithClose.
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: [
            'PutBlob'
            'PutBlockList'
            'CopyBlob'
            'FlushWithClose'
          ]
        }
      ]
    }
    // After the retry policy runs out (or on a permanent error such as 403 or 404), the
    // event goes to the dead-letter container, written with the topic's identity: no
    // storage key, no SAS (a plain deadLetterDestination would have no identity).
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
    // Event Grid retries for a day; the queue itself is the durable buffer after that.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output name string = blobCreatedToQueue.name
