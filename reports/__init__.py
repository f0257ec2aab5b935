"""Reports: transcripts (text and pcap), allure labels and attachments, rule summaries."""
