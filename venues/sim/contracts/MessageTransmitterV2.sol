// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @notice Receiver side of a CCTP V2 message (implemented by TokenMessengerV2).
interface IMessageHandlerV2 {
    function handleReceiveFinalizedMessage(
        uint32 sourceDomain,
        bytes32 sender,
        uint32 finalityThresholdExecuted,
        bytes calldata messageBody
    ) external returns (bool);

    function handleReceiveUnfinalizedMessage(
        uint32 sourceDomain,
        bytes32 sender,
        uint32 finalityThresholdExecuted,
        bytes calldata messageBody
    ) external returns (bool);
}

/// @title MessageTransmitterV2 (simulation)
/// @notice Sends and receives messages in the Circle CCTP V2 layout:
///   version(4) sourceDomain(4) destinationDomain(4) nonce(32) sender(32) recipient(32)
///   destinationCaller(32) minFinalityThreshold(4) finalityThresholdExecuted(4) = 148 bytes,
///   followed by the message body.
/// Differences from Circle's contract, on purpose:
///   - The emitted message carries a real, unique, non-zero nonce
///     keccak256(localDomain, sequence); real V2 emits zero and Iris fills it in before signing.
///   - One attester, one 65-byte signature (r, s, v) over keccak256(message), no EIP-191 prefix.
///   - No pausing, no upgradeability, no max message body size.
contract MessageTransmitterV2 {
    uint32 public constant VERSION = 1;
    uint32 public constant FINALITY_THRESHOLD_FINALIZED = 2000;
    uint256 private constant HEADER_LENGTH = 148;

    uint32 public immutable localDomain;
    address public owner;
    address public attester;
    uint256 public sequence;
    /// @notice 1 once a nonce has been received (Circle's `usedNonces`).
    mapping(bytes32 => uint256) public usedNonces;

    event MessageSent(bytes message);
    event MessageReceived(
        address indexed caller,
        uint32 sourceDomain,
        bytes32 indexed nonce,
        bytes32 sender,
        uint32 indexed finalityThresholdExecuted,
        bytes messageBody
    );
    event AttesterChanged(address attester);

    constructor(uint32 localDomain_, address attester_) {
        localDomain = localDomain_;
        owner = msg.sender;
        attester = attester_;
        emit AttesterChanged(attester_);
    }

    function setAttester(address attester_) external {
        require(msg.sender == owner, "Caller is not the owner");
        attester = attester_;
        emit AttesterChanged(attester_);
    }

    function sendMessage(
        uint32 destinationDomain,
        bytes32 recipient,
        bytes32 destinationCaller,
        uint32 minFinalityThreshold,
        bytes calldata messageBody
    ) external {
        require(destinationDomain != localDomain, "Domain is local domain");
        require(recipient != bytes32(0), "Recipient must be nonzero");
        sequence += 1;
        bytes32 nonce = keccak256(abi.encodePacked(localDomain, sequence));
        bytes memory message = abi.encodePacked(
            VERSION,
            localDomain,
            destinationDomain,
            nonce,
            bytes32(uint256(uint160(msg.sender))),
            recipient,
            destinationCaller,
            minFinalityThreshold,
            uint32(0), // finalityThresholdExecuted: set by the attester
            messageBody
        );
        emit MessageSent(message);
    }

    function receiveMessage(bytes calldata message, bytes calldata attestation)
        external
        returns (bool)
    {
        require(message.length >= HEADER_LENGTH, "Invalid message: too short");
        require(uint32(bytes4(message[0:4])) == VERSION, "Invalid message version");
        require(uint32(bytes4(message[8:12])) == localDomain, "Invalid destination domain");
        bytes32 destinationCaller = bytes32(message[108:140]);
        require(
            destinationCaller == bytes32(0)
                || destinationCaller == bytes32(uint256(uint160(msg.sender))),
            "Invalid caller for message"
        );
        require(
            _recover(keccak256(message), attestation) == attester,
            "Invalid signature: not attester"
        );

        bytes32 nonce = bytes32(message[12:44]);
        require(nonce != bytes32(0), "Invalid nonce");
        require(usedNonces[nonce] == 0, "Nonce already used");
        usedNonces[nonce] = 1;

        uint32 sourceDomain = uint32(bytes4(message[4:8]));
        bytes32 sender = bytes32(message[44:76]);
        address recipient = address(uint160(uint256(bytes32(message[76:108]))));
        uint32 finalityThresholdExecuted = uint32(bytes4(message[144:148]));
        bytes calldata body = message[HEADER_LENGTH:];
        bool handled;
        if (finalityThresholdExecuted >= FINALITY_THRESHOLD_FINALIZED) {
            handled = IMessageHandlerV2(recipient).handleReceiveFinalizedMessage(
                sourceDomain, sender, finalityThresholdExecuted, body
            );
        } else {
            handled = IMessageHandlerV2(recipient).handleReceiveUnfinalizedMessage(
                sourceDomain, sender, finalityThresholdExecuted, body
            );
        }
        require(handled, "handleReceiveMessage() failed");
        emit MessageReceived(
            msg.sender, sourceDomain, nonce, sender, finalityThresholdExecuted, body
        );
        return true;
    }

    function _recover(bytes32 digest, bytes calldata signature) internal pure returns (address) {
        require(signature.length == 65, "Invalid attestation length");
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) {
            v += 27;
        }
        require(
            uint256(s) <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0,
            "Invalid signature: s value"
        );
        address signer = ecrecover(digest, v, r, s);
        require(signer != address(0), "Invalid signature: recovery failed");
        return signer;
    }
}
